"""The test harness reads objects in-process for the `kubectl get` forms it understands, and leaves every other
form to kubectl (a misread form would make a waiting test see the wrong object, or none)."""

import pytest

from dev.object_reader import GetRequest, parse_get


@pytest.mark.parametrize("args, request_", [
    (("pods", "-n", "ns", "-l", "app=x"), GetRequest("pods", namespace="ns", selector="app=x")),
    (("finetunejobs.floe.dev", "news", "-n", "lab"), GetRequest("finetunejobs.floe.dev", "news", "lab")),
    (("crd/finetunejobs.floe.dev",), GetRequest("crd", "finetunejobs.floe.dev")),
    (("namespace", "team-a"), GetRequest("namespace", "team-a")),
    (("ftj", "-A"), GetRequest("ftj", all_namespaces=True)),
    (("events", "--namespace=ns", "--field-selector", "involvedObject.name=x"),
     GetRequest("events", namespace="ns", field_selector="involvedObject.name=x")),
])
def test_the_forms_tests_use_are_read_in_process(args, request_):
    assert parse_get(args) == request_


@pytest.mark.parametrize("args", [
    ("pods", "-o", "name"),  # an output option
    ("pods,jobs", "-n", "ns"),  # several resource types
    ("pods", "a", "b"),  # several names
    ("pods", "-n"),  # a flag without its value
    (),
])
def test_other_forms_are_left_to_kubectl(args):
    assert parse_get(args) is None
