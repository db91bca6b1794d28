"""Remoting's stats classifier: code names, the success rule, topic and group, Envoy counters."""
from __future__ import annotations

from dissectors.remoting import codes as _rc
from dissectors.remoting import headers as _rh

from ..base import Classifier

NAMESERVER_PORTS = frozenset({9876})

CLASSIFIER = Classifier(
    request_name=_rc.request_name,
    response_name=_rc.response_name,
    classify=_rc.classify,
    topic_of=_rh.topic_of,
    group_of=_rh.group_of,
    envoy_counter={
        _rc.HEART_BEAT: "heartbeat", _rc.UNREGISTER_CLIENT: "unregister",
        _rc.GET_ROUTEINFO_BY_TOPIC: "get_topic_route", _rc.SEND_MESSAGE: "send_message_v1",
        _rc.SEND_MESSAGE_V2: "send_message_v2", _rc.POP_MESSAGE: "pop_message",
        _rc.ACK_MESSAGE: "ack_message", _rc.GET_CONSUMER_LIST_BY_GROUP: "get_consumer_list",
    },
    active_gauge={
        _rc.SEND_MESSAGE: "send_message_v1_active", _rc.SEND_MESSAGE_V2: "send_message_v2_active",
        _rc.POP_MESSAGE: "pop_message_active", _rc.GET_ROUTEINFO_BY_TOPIC: "get_topic_route_active",
    },
    maintenance=frozenset({
        _rc.HEART_BEAT, _rc.UNREGISTER_CLIENT, _rc.GET_CONSUMER_LIST_BY_GROUP,
        _rc.GET_ROUTEINFO_BY_TOPIC,
    }),
    nameserver_codes=frozenset({100, 101, 102, 103, 104, 105, 106, 206, 216, 217, 219, 224, 304}),
    nameserver_ports=NAMESERVER_PORTS,
)
