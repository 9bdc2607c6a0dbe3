"""Schema fuzzing: schemathesis generates requests (valid and invalid) from the live /openapi.json of a
server on loopback (the tiny space) and checks every answer: never a 5xx, and status, content type, headers and body as
the schema documents them. `FREEBIND_FUZZ_EXAMPLES` sets examples per operation and mode (`make soak`: many).

Not checked: schemathesis's `positive_data_acceptance` (a schema-valid request must succeed). The schema
cannot say that a string is a decodable image or that a space exists, so such requests rightly get a 4xx.
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from harness.servers import Server
from service.app import create_app
from service.settings import Settings

EXAMPLES = int(os.environ.get("FREEBIND_FUZZ_EXAMPLES", "6"))


def operations() -> list[tuple[str, str]]:
    spec = create_app(Settings(spaces=["unused"], data_dir="unused")).openapi()
    return [(path, method) for path, methods in spec["paths"].items() for method in methods]


@pytest.fixture(scope="module")
def fuzz_server(space_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    with Server([str(space_file)], folder / "data", launcher="fork", log_path=folder / "server.log") as server:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            assert http.post("/collections", json={"name": "fuzz"}).status_code == 201
            items = [{"id": f"i{i}", "text": f"item {i}", "metadata": {"n": i}} for i in range(3)]
            assert http.post("/collections/fuzz/items", json={"items": items}).status_code == 200
        yield server


@pytest.fixture(scope="module")
def live_schema(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server.base}/openapi.json")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize(("path", "method"), operations())
def test_no_5xx_and_every_response_as_documented(live_schema, fuzz_server, path, method, mode):
    operation = live_schema[path][method]
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception as exc:  # an operation with nothing to negate (no parameters, no body)
        pytest.skip(f"no {mode.value} cases: {exc}")

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    try:
        run()
    except Unsatisfiable:  # nothing of this operation can be made invalid (no parameters, no body)
        assert mode == GenerationMode.NEGATIVE
        pytest.skip("no negative cases")
    finally:
        print(fuzz_server.log_tail(4000))  # shown with a failure: the server's side of it
    assert httpx.get(f"{fuzz_server.base}/health/ready").status_code == 200
