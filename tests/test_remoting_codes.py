"""Tests for the remoting code tables."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dissectors.remoting import codes


@pytest.mark.parametrize("code,name", [
    (10, "SEND_MESSAGE"), (11, "PULL_MESSAGE"), (105, "GET_ROUTEINFO_BY_TOPIC"), (310, "SEND_MESSAGE_V2"),
    (50, "UPDATE_AND_CREATE_ACL_CONFIG"), (54, "GET_BROKER_CLUSTER_ACL_CONFIG"), (361, "LITE_PULL_MESSAGE"),
    (200050, "POP_MESSAGE"), (200056, "POP_ROLLBACK"), (200151, "BATCH_ACK_MESSAGE"), (3010, "AUTH_LIST_ACL"),
    (1018, "RAFT_BROKER_HEART_BEAT_EVENT_REQUEST"),
])
def test_request_names(code, name):
    assert codes.request_name(code) == name
    assert codes.code_from_name(name) == code
    assert codes.code_from_name(name.lower()) == code


@pytest.mark.parametrize("code,name", [
    (0, "SUCCESS"), (3, "REQUEST_CODE_NOT_SUPPORTED"), (19, "PULL_NOT_FOUND"), (209, "POLLING_FULL"),
    (210, "POLLING_TIMEOUT"), (211, "BROKER_NOT_EXIST"), (1500, "GO_AWAY"), (-1006, "RPC_TIME_OUT"),
    (3002, "POLICY_NOT_EXIST"),
])
def test_response_names(code, name):
    assert codes.response_name(code) == name
    assert codes.code_from_name(name) == code


def test_4x_response_names_kept():
    assert codes.RESPONSE_CODES_4X[209] == "UPDATE_AND_CREATE_ACL_CONFIG_FAILED"
    assert codes.RESPONSE_CODES_4X[210] == "DELETE_ACL_CONFIG_FAILED"
    assert codes.RESPONSE_CODES_4X[211] == "UPDATE_GLOBAL_WHITE_ADDRS_CONFIG_FAILED"
    assert codes.RESPONSE_CODES_4X[0] == "SUCCESS"
    assert codes.code_from_name("delete_acl_config_failed") == 210


def test_unknown_names():
    assert codes.request_name(77777) == "UNKNOWN_77777"
    assert codes.response_name(-3) == "UNKNOWN_-3"
    assert codes.code_from_name("no_such_code") is None
    assert codes.code_from_name("UNKNOWN_4242") == 4242
    assert codes.code_from_name("310") == 310
    assert codes.code_from_name("GET_ROUTEINTO_BY_TOPIC") == 105  # 4.3.0 spelling


def test_table_sizes_and_no_name_clash():
    assert len(codes.REQUEST_CODES) == 163
    assert len(codes.RESPONSE_CODES) == 66
    assert not set(codes.REQUEST_CODES.values()) & set(codes.RESPONSE_CODES.values())
    assert len(set(codes.REQUEST_CODES.values())) == len(codes.REQUEST_CODES)


def test_truncation_map():
    assert codes.TRUNCATED_REQUEST_CODES == {
        3442: 200050, 3443: 200051, 3444: 200052, 3445: 200053, 3446: 200054, 3447: 200055,
        3448: 200056, 3543: 200151,
    }
    for wire, real in codes.TRUNCATED_REQUEST_CODES.items():
        assert real & 0xFFFF == wire
        assert wire not in codes.REQUEST_CODES  # a wire code never shadows a real request


def test_constants():
    assert (codes.SEND_MESSAGE, codes.SEND_MESSAGE_V2, codes.SEND_BATCH_MESSAGE) == (10, 310, 320)
    assert (codes.PULL_MESSAGE, codes.LITE_PULL_MESSAGE, codes.HEART_BEAT, codes.UNREGISTER_CLIENT) == (11, 361, 34, 35)
    assert (codes.POP_MESSAGE, codes.ACK_MESSAGE, codes.CHANGE_MESSAGE_INVISIBLETIME) == (200050, 200051, 200053)
    assert (codes.END_TRANSACTION, codes.CHECK_TRANSACTION_STATE) == (37, 39)
    assert (codes.SUCCESS, codes.SYSTEM_ERROR, codes.SYSTEM_BUSY) == (0, 1, 2)
    assert {39, 40, 220, 221, 307, 309, 326} == codes.SERVER_TO_CLIENT_REQUESTS


def test_languages():
    assert codes.LANGUAGES[0] == "JAVA" and codes.LANGUAGES[13] == "NODE_JS" and len(codes.LANGUAGES) == 14
    assert codes.language_name(9) == "GO"
    assert codes.language_name(14) == "UNKNOWN(14)"
    assert codes.language_name(-1) == "UNKNOWN(-1)"
    assert codes.language_code("RUST") == 12
    assert codes.language_code("dotnet") == 2
    assert codes.language_code("UNKNOWN(99)") == 99
    with pytest.raises(ValueError):
        codes.language_code("COBOL")


@pytest.mark.parametrize("v,name", [
    (373, "V4_8_0"), (479, "V5_3_3"), (317, "V4_5_2"), (372, "V4_8_0_SNAPSHOT"), (213, "V4_0_0"),
    (212, "V4_0_0_SNAPSHOT"), (401, "V4_9_4"), (413, "V5_0_0"), (409, "V4_9_8"), (612, "HIGHER_VERSION"),
    (0, "UNKNOWN(0)"), (211, "UNKNOWN(211)"), (613, "UNKNOWN(613)"), (-5, "UNKNOWN(-5)"),
])
def test_version_names(v, name):
    assert codes.version_name(v) == name


@given(st.integers(4, 5), st.integers(0, 9), st.integers(0, 9), st.booleans())
def test_version_formula_round_trip(major, minor, patch, snapshot):
    v = codes.version_ordinal(major, minor, patch, snapshot)
    suffix = "_SNAPSHOT" if snapshot else ""
    assert codes.version_name(v) == f"V{major}_{minor}_{patch}{suffix}"


@pytest.mark.parametrize("req,resp,cls", [
    (10, 0, "success"), (310, 10, "success"), (320, 11, "success"), (310, 12, "success"),
    (None, 11, "success"), (105, 11, "error"),
    (11, 19, "no_message"), (361, 20, "no_message"), (200050, 19, "no_message"),
    (200050, 210, "no_message"), (200054, 210, "no_message"), (200050, 208, "no_message"),
    (14, 22, "no_message"), (None, 19, "no_message"), (None, 210, "no_message"),
    (51, 210, "error"),        # 4.x DELETE_ACL_CONFIG answered DELETE_ACL_CONFIG_FAILED
    (11, 21, "error"), (200050, 209, "error"), (310, 1, "error"), (105, 17, "error"),
    (10, 22, "error"), (None, 2, "error"), (None, 3, "error"),
])
def test_classify(req, resp, cls):
    assert codes.classify(req, resp) == cls
