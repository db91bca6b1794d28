"""The ``apache.rocketmq.v2`` protobuf schema, written for rmqsniff from the published
field numbers and types (apis v2.1.2 plus ``Settings.client_properties`` of HEAD).

The schema is a compact text table below; it is turned into a ``FileDescriptorProto``
at import and loaded into a *private* ``DescriptorPool``, so only the ``protobuf``
runtime is needed (no ``protoc``, no generated ``_pb2`` pinned to one protobuf major)
and a ``rocketmq-python-client`` pb2 in the same process cannot clash with it.

Grammar: ``Name: N field TYPE; N field repeated TYPE; N field optional TYPE;
N field map<K,V>; oneof NAME { N field TYPE, N field TYPE }``.  ``Duration`` and
``Timestamp`` are the Google well-known types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory, timestamp_pb2
from google.protobuf.message import Message

PACKAGE = "apache.rocketmq.v2"
SERVICE = f"{PACKAGE}.MessagingService"

ENUMS: dict[str, list[tuple[str, int]]] = {
    "TransactionResolution": [("TRANSACTION_RESOLUTION_UNSPECIFIED", 0), ("COMMIT", 1), ("ROLLBACK", 2)],
    "TransactionSource": [("SOURCE_UNSPECIFIED", 0), ("SOURCE_CLIENT", 1), ("SOURCE_SERVER_CHECK", 2)],
    "Permission": [("PERMISSION_UNSPECIFIED", 0), ("NONE", 1), ("READ", 2), ("WRITE", 3), ("READ_WRITE", 4)],
    "FilterType": [("FILTER_TYPE_UNSPECIFIED", 0), ("TAG", 1), ("SQL", 2)],
    "AddressScheme": [("ADDRESS_SCHEME_UNSPECIFIED", 0), ("IPv4", 1), ("IPv6", 2), ("DOMAIN_NAME", 3)],
    "MessageType": [("MESSAGE_TYPE_UNSPECIFIED", 0), ("NORMAL", 1), ("FIFO", 2), ("DELAY", 3),
                    ("TRANSACTION", 4), ("LITE", 5), ("PRIORITY", 6)],
    "DigestType": [("DIGEST_TYPE_UNSPECIFIED", 0), ("CRC32", 1), ("MD5", 2), ("SHA1", 3)],
    "ClientType": [("CLIENT_TYPE_UNSPECIFIED", 0), ("PRODUCER", 1), ("PUSH_CONSUMER", 2),
                   ("SIMPLE_CONSUMER", 3), ("PULL_CONSUMER", 4), ("LITE_PUSH_CONSUMER", 5),
                   ("LITE_SIMPLE_CONSUMER", 6)],
    "Encoding": [("ENCODING_UNSPECIFIED", 0), ("IDENTITY", 1), ("GZIP", 2)],
    "Language": [("LANGUAGE_UNSPECIFIED", 0), ("JAVA", 1), ("CPP", 2), ("DOT_NET", 3), ("GOLANG", 4),
                 ("RUST", 5), ("PYTHON", 6), ("PHP", 7), ("NODE_JS", 8), ("RUBY", 9),
                 ("OBJECTIVE_C", 10), ("DART", 11), ("KOTLIN", 12)],
    "QueryOffsetPolicy": [("BEGINNING", 0), ("END", 1), ("TIMESTAMP", 2)],
    "LiteSubscriptionAction": [("PARTIAL_ADD", 0), ("PARTIAL_REMOVE", 1), ("COMPLETE_ADD", 2),
                               ("COMPLETE_REMOVE", 3)],
    "OffsetPolicy": [("LAST", 0), ("MIN", 1), ("MAX", 2)],
    "Code": [
        ("CODE_UNSPECIFIED", 0), ("OK", 20000), ("MULTIPLE_RESULTS", 30000), ("BAD_REQUEST", 40000),
        ("ILLEGAL_ACCESS_POINT", 40001), ("ILLEGAL_TOPIC", 40002), ("ILLEGAL_CONSUMER_GROUP", 40003),
        ("ILLEGAL_MESSAGE_TAG", 40004), ("ILLEGAL_MESSAGE_KEY", 40005), ("ILLEGAL_MESSAGE_GROUP", 40006),
        ("ILLEGAL_MESSAGE_PROPERTY_KEY", 40007), ("INVALID_TRANSACTION_ID", 40008),
        ("ILLEGAL_MESSAGE_ID", 40009), ("ILLEGAL_FILTER_EXPRESSION", 40010),
        ("ILLEGAL_INVISIBLE_TIME", 40011), ("ILLEGAL_DELIVERY_TIME", 40012),
        ("INVALID_RECEIPT_HANDLE", 40013), ("MESSAGE_PROPERTY_CONFLICT_WITH_TYPE", 40014),
        ("UNRECOGNIZED_CLIENT_TYPE", 40015), ("MESSAGE_CORRUPTED", 40016), ("CLIENT_ID_REQUIRED", 40017),
        ("ILLEGAL_POLLING_TIME", 40018), ("ILLEGAL_OFFSET", 40019), ("ILLEGAL_LITE_TOPIC", 40020),
        ("INVALID_CLIENT_PROPERTIES", 40021), ("UNAUTHORIZED", 40100), ("PAYMENT_REQUIRED", 40200),
        ("FORBIDDEN", 40300), ("NOT_FOUND", 40400), ("MESSAGE_NOT_FOUND", 40401),
        ("TOPIC_NOT_FOUND", 40402), ("CONSUMER_GROUP_NOT_FOUND", 40403), ("OFFSET_NOT_FOUND", 40404),
        ("REQUEST_TIMEOUT", 40800), ("PAYLOAD_TOO_LARGE", 41300), ("MESSAGE_BODY_TOO_LARGE", 41301),
        ("MESSAGE_BODY_EMPTY", 41302), ("PRECONDITION_FAILED", 42800), ("TOO_MANY_REQUESTS", 42900),
        ("LITE_TOPIC_QUOTA_EXCEEDED", 42901), ("LITE_SUBSCRIPTION_QUOTA_EXCEEDED", 42902),
        ("REQUEST_HEADER_FIELDS_TOO_LARGE", 43100), ("MESSAGE_PROPERTIES_TOO_LARGE", 43101),
        ("INTERNAL_ERROR", 50000), ("INTERNAL_SERVER_ERROR", 50001), ("HA_NOT_AVAILABLE", 50002),
        ("NOT_IMPLEMENTED", 50100), ("PROXY_TIMEOUT", 50400), ("MASTER_PERSISTENCE_TIMEOUT", 50401),
        ("SLAVE_PERSISTENCE_TIMEOUT", 50402), ("UNSUPPORTED", 50500), ("VERSION_UNSUPPORTED", 50501),
        ("VERIFY_FIFO_MESSAGE_UNSUPPORTED", 50502), ("FAILED_TO_CONSUME_MESSAGE", 60000),
    ],
}

MESSAGES: dict[str, str] = {
    # definition.proto
    "FilterExpression": "1 type FilterType; 2 expression string",
    "RetryPolicy": "1 max_attempts int32; oneof strategy { 2 exponential_backoff ExponentialBackoff,"
                   " 3 customized_backoff CustomizedBackoff }",
    "ExponentialBackoff": "1 initial Duration; 2 max Duration; 3 multiplier float",
    "CustomizedBackoff": "1 next repeated Duration",
    "Resource": "1 resource_namespace string; 2 name string",
    "SubscriptionEntry": "1 topic Resource; 2 expression FilterExpression",
    "Address": "1 host string; 2 port int32",
    "Endpoints": "1 scheme AddressScheme; 2 addresses repeated Address",
    "Broker": "1 name string; 2 id int32; 3 endpoints Endpoints",
    "MessageQueue": "1 topic Resource; 2 id int32; 3 permission Permission; 4 broker Broker;"
                    " 5 accept_message_types repeated MessageType",
    "Digest": "1 type DigestType; 2 checksum string",
    "DeadLetterQueue": "1 topic string; 2 message_id string",
    "SystemProperties": (
        "1 tag optional string; 2 keys repeated string; 3 message_id string; 4 body_digest Digest;"
        " 5 body_encoding Encoding; 6 message_type MessageType; 7 born_timestamp Timestamp;"
        " 8 born_host string; 9 store_timestamp optional Timestamp; 10 store_host string;"
        " 11 delivery_timestamp optional Timestamp; 12 receipt_handle optional string; 13 queue_id int32;"
        " 14 queue_offset optional int64; 15 invisible_duration optional Duration;"
        " 16 delivery_attempt optional int32; 17 message_group optional string;"
        " 18 trace_context optional string; 19 orphaned_transaction_recovery_duration optional Duration;"
        " 20 dead_letter_queue optional DeadLetterQueue; 21 lite_topic optional string;"
        " 22 priority optional int32"),
    "Message": "1 topic Resource; 2 user_properties map<string,string>; 3 system_properties SystemProperties;"
               " 4 body bytes",
    "Assignment": "1 message_queue MessageQueue",
    "Status": "1 code Code; 2 message string",
    "UA": "1 language Language; 2 version string; 3 platform string; 4 hostname string",
    "Settings": ("1 client_type optional ClientType; 2 access_point optional Endpoints;"
                 " 3 backoff_policy optional RetryPolicy; 4 request_timeout optional Duration;"
                 " oneof pub_sub { 5 publishing Publishing, 6 subscription Subscription };"
                 " 7 user_agent UA; 8 metric Metric; 9 client_properties map<string,string>"),
    "Publishing": "1 topics repeated Resource; 2 max_body_size int32; 3 validate_message_type bool",
    "Subscription": ("1 group optional Resource; 2 subscriptions repeated SubscriptionEntry; 3 fifo optional bool;"
                     " 4 receive_batch_size optional int32; 5 long_polling_timeout optional Duration;"
                     " 6 lite_subscription_quota optional int32; 7 max_lite_topic_size optional int32"),
    "Metric": "1 on bool; 2 endpoints optional Endpoints",
    "OffsetOption": "oneof offset_type { 1 policy OffsetPolicy, 2 offset int64, 3 tail_n int64, 4 timestamp int64 }",
    # service.proto
    "QueryRouteRequest": "1 topic Resource; 2 endpoints Endpoints",
    "QueryRouteResponse": "1 status Status; 2 message_queues repeated MessageQueue",
    "SendMessageRequest": "1 messages repeated Message",
    "SendResultEntry": ("1 status Status; 2 message_id string; 3 transaction_id string; 4 offset int64;"
                        " 5 recall_handle string"),
    "SendMessageResponse": "1 status Status; 2 entries repeated SendResultEntry",
    "QueryAssignmentRequest": "1 topic Resource; 2 group Resource; 3 endpoints Endpoints",
    "QueryAssignmentResponse": "1 status Status; 2 assignments repeated Assignment",
    "ReceiveMessageRequest": ("1 group Resource; 2 message_queue MessageQueue; 3 filter_expression FilterExpression;"
                              " 4 batch_size int32; 5 invisible_duration optional Duration; 6 auto_renew bool;"
                              " 7 long_polling_timeout optional Duration; 8 attempt_id optional string"),
    "ReceiveMessageResponse": "oneof content { 1 status Status, 2 message Message, 3 delivery_timestamp Timestamp }",
    "AckMessageEntry": "1 message_id string; 2 receipt_handle string; 3 lite_topic optional string",
    "AckMessageRequest": "1 group Resource; 2 topic Resource; 3 entries repeated AckMessageEntry",
    "AckMessageResultEntry": "1 message_id string; 2 receipt_handle string; 3 status Status",
    "AckMessageResponse": "1 status Status; 2 entries repeated AckMessageResultEntry",
    "ForwardMessageToDeadLetterQueueRequest": (
        "1 group Resource; 2 topic Resource; 3 receipt_handle string; 4 message_id string;"
        " 5 delivery_attempt int32; 6 max_delivery_attempts int32; 7 lite_topic optional string"),
    "ForwardMessageToDeadLetterQueueResponse": "1 status Status",
    "HeartbeatRequest": "1 group optional Resource; 2 client_type ClientType",
    "HeartbeatResponse": "1 status Status",
    "EndTransactionRequest": ("1 topic Resource; 2 message_id string; 3 transaction_id string;"
                              " 4 resolution TransactionResolution; 5 source TransactionSource;"
                              " 6 trace_context string"),
    "EndTransactionResponse": "1 status Status",
    "PrintThreadStackTraceCommand": "1 nonce string",
    "ThreadStackTrace": "1 nonce string; 2 thread_stack_trace optional string",
    "VerifyMessageCommand": "1 nonce string; 2 message Message",
    "VerifyMessageResult": "1 nonce string",
    "RecoverOrphanedTransactionCommand": "1 message Message; 2 transaction_id string",
    "ReconnectEndpointsCommand": "1 nonce string",
    "NotifyUnsubscribeLiteCommand": "1 lite_topic string",
    "TelemetryCommand": (
        "1 status optional Status; oneof command { 2 settings Settings, 3 thread_stack_trace ThreadStackTrace,"
        " 4 verify_message_result VerifyMessageResult,"
        " 5 recover_orphaned_transaction_command RecoverOrphanedTransactionCommand,"
        " 6 print_thread_stack_trace_command PrintThreadStackTraceCommand,"
        " 7 verify_message_command VerifyMessageCommand,"
        " 8 reconnect_endpoints_command ReconnectEndpointsCommand,"
        " 9 notify_unsubscribe_lite_command NotifyUnsubscribeLiteCommand }"),
    "NotifyClientTerminationRequest": "1 group optional Resource",
    "NotifyClientTerminationResponse": "1 status Status",
    "ChangeInvisibleDurationRequest": ("1 group Resource; 2 topic Resource; 3 receipt_handle string;"
                                       " 4 invisible_duration Duration; 5 message_id string;"
                                       " 6 lite_topic optional string; 7 suspend optional bool"),
    "ChangeInvisibleDurationResponse": "1 status Status; 2 receipt_handle string",
    "PullMessageRequest": ("1 group Resource; 2 message_queue MessageQueue; 3 offset int64; 4 batch_size int32;"
                           " 5 filter_expression FilterExpression; 6 long_polling_timeout Duration"),
    "PullMessageResponse": "oneof content { 1 status Status, 2 message Message, 3 next_offset int64 }",
    "UpdateOffsetRequest": "1 group Resource; 2 message_queue MessageQueue; 3 offset int64",
    "UpdateOffsetResponse": "1 status Status",
    "GetOffsetRequest": "1 group Resource; 2 message_queue MessageQueue",
    "GetOffsetResponse": "1 status Status; 2 offset int64",
    "QueryOffsetRequest": ("1 message_queue MessageQueue; 2 query_offset_policy QueryOffsetPolicy;"
                           " 3 timestamp optional Timestamp"),
    "QueryOffsetResponse": "1 status Status; 2 offset int64",
    "RecallMessageRequest": "1 topic Resource; 2 recall_handle string",
    "RecallMessageResponse": "1 status Status; 2 message_id string",
    "SyncLiteSubscriptionRequest": ("1 action LiteSubscriptionAction; 2 topic Resource; 3 group Resource;"
                                    " 4 lite_topic_set repeated string; 5 version optional int64;"
                                    " 6 offset_option optional OffsetOption"),
    "SyncLiteSubscriptionResponse": "1 status Status",
}


@dataclass(frozen=True, slots=True)
class Rpc:
    """One MessagingService method."""

    code: int  # rmqsniff's number for the method (stats key)
    name: str
    request: str
    response: str
    client_streaming: bool = False
    server_streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{SERVICE}/{self.name}"


RPCS: tuple[Rpc, ...] = (
    Rpc(1, "QueryRoute", "QueryRouteRequest", "QueryRouteResponse"),
    Rpc(2, "Heartbeat", "HeartbeatRequest", "HeartbeatResponse"),
    Rpc(3, "SendMessage", "SendMessageRequest", "SendMessageResponse"),
    Rpc(4, "QueryAssignment", "QueryAssignmentRequest", "QueryAssignmentResponse"),
    Rpc(5, "ReceiveMessage", "ReceiveMessageRequest", "ReceiveMessageResponse", server_streaming=True),
    Rpc(6, "AckMessage", "AckMessageRequest", "AckMessageResponse"),
    Rpc(7, "ForwardMessageToDeadLetterQueue", "ForwardMessageToDeadLetterQueueRequest",
        "ForwardMessageToDeadLetterQueueResponse"),
    Rpc(8, "PullMessage", "PullMessageRequest", "PullMessageResponse", server_streaming=True),
    Rpc(9, "UpdateOffset", "UpdateOffsetRequest", "UpdateOffsetResponse"),
    Rpc(10, "GetOffset", "GetOffsetRequest", "GetOffsetResponse"),
    Rpc(11, "QueryOffset", "QueryOffsetRequest", "QueryOffsetResponse"),
    Rpc(12, "EndTransaction", "EndTransactionRequest", "EndTransactionResponse"),
    Rpc(13, "Telemetry", "TelemetryCommand", "TelemetryCommand", client_streaming=True, server_streaming=True),
    Rpc(14, "NotifyClientTermination", "NotifyClientTerminationRequest", "NotifyClientTerminationResponse"),
    Rpc(15, "ChangeInvisibleDuration", "ChangeInvisibleDurationRequest", "ChangeInvisibleDurationResponse"),
    Rpc(16, "RecallMessage", "RecallMessageRequest", "RecallMessageResponse"),
    Rpc(17, "SyncLiteSubscription", "SyncLiteSubscriptionRequest", "SyncLiteSubscriptionResponse"),
)
METHOD_UNKNOWN = 0  # :path lost and not inferable
METHOD_OTHER = 99  # a :path outside MessagingService (the path itself is kept on the message)
BY_NAME: dict[str, Rpc] = {r.name: r for r in RPCS}
BY_PATH: dict[str, Rpc] = {r.path: r for r in RPCS}
BY_CODE: dict[int, Rpc] = {r.code: r for r in RPCS}
CODE_NAMES: dict[int, str] = {v: k for k, v in ENUMS["Code"]}

_SCALARS = {
    "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "uint64": descriptor_pb2.FieldDescriptorProto.TYPE_UINT64,
    "int32": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
    "uint32": descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
    "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
}
_WKT = {"Duration": ".google.protobuf.Duration", "Timestamp": ".google.protobuf.Timestamp"}
_F = descriptor_pb2.FieldDescriptorProto


def _set_type(f: descriptor_pb2.FieldDescriptorProto, typ: str) -> None:
    if typ in _SCALARS:
        f.type = _SCALARS[typ]
    elif typ in _WKT:
        f.type = _F.TYPE_MESSAGE
        f.type_name = _WKT[typ]
    elif typ in ENUMS:
        f.type = _F.TYPE_ENUM
        f.type_name = f".{PACKAGE}.{typ}"
    elif typ in MESSAGES:
        f.type = _F.TYPE_MESSAGE
        f.type_name = f".{PACKAGE}.{typ}"
    else:
        raise ValueError(f"schema: unknown type {typ!r}")


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def _message(name: str, spec: str) -> descriptor_pb2.DescriptorProto:
    m = descriptor_pb2.DescriptorProto(name=name)
    synthetic: list[str] = []
    for part in (p.strip() for p in spec.split(";")):
        if part.startswith("oneof "):
            head, _, body = part.partition("{")
            m.oneof_decl.add(name=head.split()[1])
            fields: list[tuple[str, int | None]] = [(f, len(m.oneof_decl) - 1) for f in body.rstrip("} ").split(",")]
        else:
            fields = [(part, None)]
        for text, oneof in fields:
            words = text.split()
            num, fname, rest = int(words[0]), words[1], words[2:]
            f = m.field.add(name=fname, number=num, json_name=fname)
            f.label = _F.LABEL_OPTIONAL
            if oneof is not None:
                f.oneof_index = oneof
            if rest[0].startswith("map<"):
                k, v = rest[0][4:-1].split(",")
                entry = m.nested_type.add(name=_camel(fname) + "Entry")
                entry.options.map_entry = True
                for n, (en, et) in enumerate((("key", k), ("value", v)), 1):
                    ef = entry.field.add(name=en, number=n, json_name=en, label=_F.LABEL_OPTIONAL)
                    _set_type(ef, et)
                f.label = _F.LABEL_REPEATED
                f.type = _F.TYPE_MESSAGE
                f.type_name = f".{PACKAGE}.{name}.{entry.name}"
                continue
            if rest[0] == "repeated":
                f.label = _F.LABEL_REPEATED
                rest = rest[1:]
            elif rest[0] == "optional":
                f.proto3_optional = True
                synthetic.append(fname)
                rest = rest[1:]
            _set_type(f, rest[0])
    for fname in synthetic:  # proto3 optional: synthetic oneofs come after the real ones
        m.oneof_decl.add(name=f"_{fname}")
        next(f for f in m.field if f.name == fname).oneof_index = len(m.oneof_decl) - 1
    return m


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for mod in (duration_pb2, timestamp_pb2):
        fdp = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(fdp)
        pool.Add(fdp)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="rmqsniff/apache_rocketmq_v2.proto", package=PACKAGE, syntax="proto3",
        dependency=["google/protobuf/duration.proto", "google/protobuf/timestamp.proto"])
    for ename, values in ENUMS.items():
        e = fdp.enum_type.add(name=ename)
        for vname, num in values:
            e.value.add(name=vname, number=num)
    for mname, spec in MESSAGES.items():
        fdp.message_type.append(_message(mname, spec))
    svc = fdp.service.add(name="MessagingService")
    for r in RPCS:
        svc.method.add(name=r.name, input_type=f".{PACKAGE}.{r.request}", output_type=f".{PACKAGE}.{r.response}",
                       client_streaming=r.client_streaming, server_streaming=r.server_streaming)
    pool.Add(fdp)
    return pool


POOL = _build_pool()
# message name -> generated class (module-level constants built once at import; no mutable state)
CLASSES: dict[str, type[Message]] = {
    n: message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{n}")) for n in MESSAGES
}


def message_class(name: str) -> type[Any]:
    """The protobuf class of an ``apache.rocketmq.v2`` message (e.g. ``"SendMessageRequest"``).

    Typed ``type[Any]``: the class is built at run time from the schema, so the type checker
    knows none of its fields (``CLASSES`` keeps the precise ``type[Message]``)."""
    return CLASSES[name]


def code_name(code: int) -> str:
    """Name of a RocketMQ ``Code`` value (``CODE_<n>`` when unknown)."""
    return CODE_NAMES.get(code, f"CODE_{code}")
