"""The catalogue: every finding ``rmqsniff doctor`` can report, its rule, its thresholds and
what to check.  The detectors (:mod:`.detectors`) use these constants and nothing else;
the README's catalogue is this module's :func:`markdown` (a test keeps them the same)."""
from __future__ import annotations

from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"
NOTE = "note"
SEVERITY_RANK = {ERROR: 0, WARNING: 1, NOTE: 2}

# -- thresholds ------------------------------------------------------------------------------
UNANSWERED_GRACE_S = 35.0  # a request is "never answered" once the capture went on this long after it
#   (longer than the broker's long-poll suspension, 15 s, and the clients' default 30 s pull timeout)
STARTUP_S = 60.0  # SUBSCRIPTION_NOT_LATEST / NOT_EXIST this soon after a group's first request: start-up
REACH_GRACE_S = 5.0  # an address handed out is "never reached" when the capture went on this long after
STORM_WINDOW_S = 60.0  # rebalance storm: NOTIFY_CONSUMER_IDS_CHANGED to one group ...
STORM_MIN = 10  # ... at least this many times within STORM_WINDOW_S
TX_CHECKS_MIN = 3  # the same half message checked this many times: a transaction check storm
HEARTBEAT_GAP_S = 120.0  # the broker closes a client's channel after 120 s without a heartbeat
SKEW_S = 2.0  # born timestamp this far from the capture's clock: a client clock is off
MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # the broker's default maxMessageSize
NEAR_SIZE_FRACTION = 0.9  # a body this close to MAX_MESSAGE_SIZE is "near the limit"
OUTLIER_FACTOR = 10.0  # slow outlier: beyond this many times its code's median ...
OUTLIER_MIN_MS = 1000.0  # ... and beyond this
OUTLIER_MIN_SAMPLES = 20  # answered requests of a code before its outliers are judged
SLOW_BROKER_FACTOR = 3.0  # a broker whose median is this many times its peers' for the same code ...
SLOW_BROKER_MIN_MS = 50.0  # ... and beyond this
SLOW_BROKER_MIN_SAMPLES = 20  # answered requests per broker and code before they are compared
SYSTEM_TOPIC_PREFIXES = ("%RETRY%", "%DLQ%")  # created by the broker on first use: missing routes expected

# -- memory bounds ---------------------------------------------------------------------------
MAX_EVIDENCE = 20  # exchange indexes kept per finding
MAX_CONNECTIONS = 5  # connection labels kept per finding
MAX_SUBJECTS = 64  # findings of one id (topics, groups, brokers …); more fold into "<other>"
MAX_KEYS = 200_000  # unique keys remembered for re-send detection (oldest forgotten first)
MAX_TRACKED = 10_000  # groups, clients, topics, addresses, half messages, codes each
MAX_PENDING = 10_000  # unanswered requests waiting for UNANSWERED_GRACE_S to pass
MAX_MEMBERS = 64  # members (client ids) remembered per consumer group


@dataclass(frozen=True, slots=True)
class Entry:
    """One finding of the catalogue."""

    id: str
    severity: str
    title: str
    rule: str
    hint: str


CATALOGUE: tuple[Entry, ...] = (
    Entry("broker-busy", ERROR, "broker busy / flow control",
          "any answer SYSTEM_BUSY, FLOW_CONTROL, a SYSTEM_ERROR whose remark says the broker is busy "
          "([PC_SYNCHRONIZED], [TIMEOUT_CLEAN_QUEUE] …) or gRPC TOO_MANY_REQUESTS; one finding per broker",
          "the broker sheds load: check its disk and page cache (osPageCacheBusyTimeOutMills), "
          "sendThreadPoolQueueCapacity / waitTimeMillsInSendQueue, and the producers' send rate"),
    Entry("send-topic-missing", ERROR, "sends to a topic that does not exist",
          "any send answered TOPIC_NOT_EXIST (gRPC TOPIC_NOT_FOUND); one finding per topic",
          "create the topic (mqadmin updateTopic) or enable autoCreateTopicEnable; check the topic name and namespace"),
    Entry("send-no-permission", ERROR, "sends refused: no permission",
          "any send answered NO_PERMISSION (gRPC FORBIDDEN / UNAUTHORIZED); one finding per topic",
          "the broker's or topic's perm lacks WRITE (wipeWritePerm, perm=4), or the ACL denies this AccessKey"),
    Entry("send-message-illegal", ERROR, "sends refused: message illegal or too large",
          "any send answered MESSAGE_ILLEGAL (gRPC PAYLOAD_TOO_LARGE, MESSAGE_BODY_TOO_LARGE, "
          "MESSAGE_PROPERTIES_TOO_LARGE, MESSAGE_CORRUPTED); one finding per topic",
          "the body exceeds the broker's maxMessageSize, or properties / topic name are invalid"),
    Entry("send-flush-timeout", ERROR, "sends stored but not flushed / replicated in time",
          "any send answered FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT or SLAVE_NOT_AVAILABLE "
          "(gRPC MASTER/SLAVE_PERSISTENCE_TIMEOUT, HA_NOT_AVAILABLE); one finding per topic",
          "SYNC_FLUSH / SYNC_MASTER brokers: check disk latency, syncFlushTimeout and the slave's health; "
          "the client may re-send (duplicates)"),
    Entry("send-service-unavailable", ERROR, "sends refused: service not available",
          "any send answered SERVICE_NOT_AVAILABLE; one finding per topic",
          "the broker is shutting down, is a slave, or its store is not writable (disk full: diskMaxUsedSpaceRatio)"),
    Entry("unanswered", WARNING, "requests never answered",
          f"requests (not oneway) without an answer although the capture went on {UNANSWERED_GRACE_S:g} s "
          "after them; one finding per request code and server",
          "client timeouts follow: check the server's load and GC pauses, the network path, and whether the "
          "capture lost packets (transport.gap)"),
    Entry("resent-message", WARNING, "the same message sent twice",
          "a unique key (UNIQ_KEY / gRPC message id) sent again after its first send was answered with success "
          "or never answered (a relay's leg, sent before the first is answered, does not count); one finding per topic",
          "the producer re-sent after a timeout: consumers get duplicates; check sendMsgTimeout, "
          "retryTimesWhenSendFailed and make consumers idempotent"),
    Entry("route-topic-missing", WARNING, "route lookups for a topic that does not exist",
          "route lookups answered TOPIC_NOT_EXIST for a topic never resolved in the capture "
          f"(topics starting {' / '.join(SYSTEM_TOPIC_PREFIXES)} are created on first use and left out); "
          "one finding per topic",
          "create the topic or enable autoCreateTopicEnable on the brokers; check the name, namespace and "
          "that the name server is the cluster's"),
    Entry("address-never-reached", WARNING, "route answers hand out an address no client reaches",
          "a master broker address handed out by route answers, while other servers were reached, "
          f"to which no exchange was seen although the capture went on {REACH_GRACE_S:g} s after",
          "the broker advertises an address clients cannot reach (brokerIP1, NAT, containers / Kubernetes "
          "pod addresses): set brokerIP1 to a reachable address, or go through the proxy"),
    Entry("mixed-subscriptions", ERROR, "a consumer group whose members subscribe differently",
          "members (client ids) of one consumer group heartbeat different subscriptions (topics or "
          "expressions); one finding per group",
          "every member of a group must subscribe the same topics with the same tags: messages a member "
          "filters out are 'lost'; use one group per subscription"),
    Entry("subscription-not-latest", WARNING, "SUBSCRIPTION_NOT_LATEST / NOT_EXIST beyond start-up",
          f"pulls answered SUBSCRIPTION_NOT_LATEST or SUBSCRIPTION_NOT_EXIST more than {STARTUP_S:g} s after "
          "the group's first request (earlier: start-up, not reported); one finding per group",
          "the broker does not hold the consumer's latest subscription: heartbeats are lost or rejected, or "
          "members keep changing subscriptions; check heartbeats and mixed-subscriptions"),
    Entry("rebalance-storm", WARNING, "rebalance storm",
          f"at least {STORM_MIN} NOTIFY_CONSUMER_IDS_CHANGED to one group within {STORM_WINDOW_S:g} s",
          "consumers keep joining and leaving (crash loops, short-lived consumers, heartbeat expiry): "
          "every change pauses consumption for a rebalance"),
    Entry("mixed-clients", NOTE, "a group mixing client languages or versions",
          "members of one consumer group heartbeat with different languages or client versions",
          "different clients allocate queues and filter differently; keep one client version per group"),
    Entry("transaction-check-storm", WARNING, "half messages checked again and again",
          f"the same half message checked at least {TX_CHECKS_MIN} times (the producers' UNKNOW answers "
          "are counted with it; one UNKNOW then a commit is normal); one finding per producer group",
          "the producer's checkLocalTransaction cannot decide: fix its state lookup; the broker checks up to "
          "transactionCheckMax times, then drops the message"),
    Entry("heartbeat-gap", WARNING, "heartbeat gaps",
          f"a client's heartbeats more than {HEARTBEAT_GAP_S:g} s apart",
          "the broker drops the client after 120 s without heartbeats (rebalance, lost subscription): check the "
          "client's heartbeatBrokerInterval, GC pauses and network"),
    Entry("clock-skew", WARNING, "client clock skew",
          f"messages born more than {SKEW_S:g} s away from the capture's clock; one finding per client host",
          "sync the client's clock (NTP): delayed / timed messages, traces and lag figures depend on it"),
    Entry("near-size-limit", NOTE, "messages near the size limit",
          f"message bodies of at least {NEAR_SIZE_FRACTION:.0%} of {MAX_MESSAGE_SIZE // (1024 * 1024)} MiB "
          "(the broker's default maxMessageSize); one finding per topic",
          "larger messages will be refused (MESSAGE_ILLEGAL): compress, split, or raise maxMessageSize on "
          "brokers and clients together"),
    Entry("protocol-mismatch", ERROR, "a protocol spoken to another protocol's port",
          "exchanges of one protocol on a server port well known for another (HTTP/2 gRPC to the remoting "
          "port, remoting to the gRPC port)",
          "the client points at the wrong port: gRPC clients use the proxy's 8081, remoting clients the name "
          "server 9876 / broker 10911 ('Failed ALPN negotiation' and connection resets follow)"),
    Entry("slow-outlier", WARNING, "requests far slower than their code's usual",
          f"answers beyond {OUTLIER_FACTOR:g}× their code's median and beyond {OUTLIER_MIN_MS:g} ms "
          f"(codes with {OUTLIER_MIN_SAMPLES}+ answers; long-polling codes left out); one finding per code",
          "look at the evidence's servers and times: GC pauses, disk flush, a busy broker or the network"),
    Entry("slow-broker", WARNING, "one broker slower than its peers",
          f"a server whose median for a code is {SLOW_BROKER_FACTOR:g}× the other servers' and beyond "
          f"{SLOW_BROKER_MIN_MS:g} ms ({SLOW_BROKER_MIN_SAMPLES}+ answers each; long-polling codes left out)",
          "check that broker's disk, page cache, load and GC against its peers"),
)

BY_ID: dict[str, Entry] = {e.id: e for e in CATALOGUE}
PENDING_JOURNEY = ("retries / dead letters", "pop acks after the invisible time", "duplicate deliveries")


def markdown() -> str:
    """The catalogue as a Markdown table (the README's)."""
    rows = ["| id | severity | rule | what to check |", "|---|---|---|---|"]
    rows += [f"| `{e.id}` | {e.severity} | {e.rule} | {e.hint} |" for e in CATALOGUE]
    return "\n".join(rows) + "\n"
