"""`pipeline serve`: an HTTP API over an exported SavedModel, in the TF Serving REST API's shape.

- `POST /v1/models/<name>:predict` with `{"instances": [...]}` (row format) returns `{"predictions": [...]}`, and
  with `{"inputs": ...}` (columnar format) `{"outputs": [...]}`, as TF Serving does;
- `GET /v1/models/<name>` (version status), `GET /v1/models/<name>/metadata` (signature),
  `GET /health`.

Every request is checked against the schema saved with the model (`assets.extra/pipeline_spec.json`:
columns, types, ranges, categories, image shape) before the model sees it: a bad request gets a
4xx naming the field and the problem, never a 500, and the server keeps serving.
"""

import json
import logging
import re
import socket
import sys
from typing import Any

import numpy as np

from pipeline.core.errors import StageError
from pipeline.ml.modalities import RequestError, model_modality  # each kind's request checks raise it
from pipeline.serving.loading import ServedModel, load_served_model
from pipeline.serving.saved_model import SIGNATURE

log = logging.getLogger(__name__)


MAX_JSON_DEPTH = 32  # an image request nests 5 deep; Python's json parser recurses once per level
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest, found without parsing it (brackets
    inside strings do not count), so a hostile body is refused before the recursive parser sees it."""
    structure = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    opened = (structure == ord("[")) | (structure == ord("{"))
    closed = (structure == ord("]")) | (structure == ord("}"))
    if not opened.any():
        return 0
    return int(np.max(np.cumsum(opened.astype(np.int64) - closed.astype(np.int64))))


def parse_body(raw: bytes) -> Any:
    """The request body as Python objects; RequestError (400) for anything that is not JSON we can read."""
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(f"the JSON body nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise RequestError(f"malformed JSON: {problem}") from None
    except RecursionError:  # only reachable if the depth scan above were wrong; never a 500
        raise RequestError(f"the JSON body nests too deeply; the limit is {MAX_JSON_DEPTH}") from None


def instances_from_body(body: Any, spec) -> list:
    """The request's examples as a list, from TF Serving's row (`instances`) or columnar (`inputs`) format."""
    if not isinstance(body, dict) or (("instances" in body) == ("inputs" in body)):
        raise RequestError('expected a JSON object with either "instances" (a list of examples) or "inputs"')
    if "instances" in body:
        if not isinstance(body["instances"], list):
            raise RequestError('"instances" must be a list of examples')
        return body["instances"]
    return model_modality(spec.kind).columnar_instances(body["inputs"], spec)


def validate_request(body: Any, spec, max_batch_size: int) -> dict[str, np.ndarray]:
    """Model inputs for a parsed request body; raises RequestError naming what is wrong."""
    instances = instances_from_body(body, spec)
    if not instances:
        raise RequestError("the request holds no examples")
    if len(instances) > max_batch_size:
        raise RequestError(f"a batch of {len(instances)} examples exceeds the limit of {max_batch_size}", status=413)
    return model_modality(spec.kind).request_batch(instances, spec)


def metadata(model: ServedModel) -> dict:
    """The model's signature, in the shape of TF Serving's metadata answer."""
    tf_serving_names = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "string": "DT_STRING", "int64": "DT_INT64"}

    def tensor_info(dtype: str, shape: list) -> dict:
        return {
            "dtype": tf_serving_names.get(dtype, f"DT_{dtype.upper()}"),
            "tensor_shape": {"dim": [{"size": str(-1 if size is None else size)} for size in shape]},
        }

    outputs = {name: tensor_info(*spec) for name, spec in model.output_specs.items()}
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE: {
                        "inputs": {name: tensor_info(*spec) for name, spec in model.input_specs.items()},
                        "outputs": outputs,
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            },
            "pipeline_spec": {key: getattr(model.spec, key) for key in ("kind", "task", "classes", "schema")},
        },
    }


def create_app(model: ServedModel, max_batch_size: int = 256, max_body_bytes: int = 10 * 2**20):
    """The FastAPI application serving `model`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title=f"{model.name} (Keras MLOps pipeline)", docs_url="/docs")

    def error(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def unknown(name: str) -> JSONResponse:
        return error(f"unknown model {name!r}; this server serves {model.name!r}", status=404)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model.name, "version": model.version}

    @app.get("/v1/models/{name}")
    def status(name: str):
        if name != model.name:
            return unknown(name)
        return {
            "model_version_status": [
                {
                    "version": str(model.version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }

    @app.get("/v1/models/{name}/metadata")
    def model_metadata(name: str):
        return metadata(model) if name == model.name else unknown(name)

    @app.post("/v1/models/{name_and_verb:path}")
    async def predict(name_and_verb: str, request: Request):
        name, _, verb = name_and_verb.partition(":")
        if name.split("/versions/")[0] != model.name:
            return unknown(name)
        if verb != "predict":
            return error(f"unsupported method {verb!r}; this server answers :predict", status=404)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            return error(f"request body of {declared} bytes exceeds the limit of {max_body_bytes}", status=413)
        raw = await request.body()
        if len(raw) > max_body_bytes:
            return error(f"request body of {len(raw)} bytes exceeds the limit of {max_body_bytes}", status=413)
        # Parsing, checking and the model run in a worker thread: /health and metadata answer meanwhile.
        status, answer = await run_in_threadpool(answer_request, raw)
        return answer if status == 200 else error(answer, status=status)

    def answer_request(raw: bytes) -> tuple[int, Any]:
        try:
            body = parse_body(raw)
            inputs = validate_request(body, model.spec, max_batch_size)
        except RequestError as problem:
            return problem.status, str(problem)
        except Exception as problem:  # noqa: BLE001 - a request the checks did not foresee is still the client's
            log.warning("request refused by an unexpected check failure: %r", problem)
            return 400, f"the request could not be read: {type(problem).__name__}: {problem}"
        try:
            outputs = model.predict(inputs)
        except Exception as problem:  # noqa: BLE001 - a model failure must not take the server down
            log.exception("prediction failed")
            return 500, f"the model could not answer this request: {problem}"
        key = "outputs" if "inputs" in body else "predictions"  # TF Serving answers each format in its own key
        return 200, {key: np.asarray(outputs).tolist()}

    return app


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port`, not yet listening (a connection is refused, not left waiting, until
    the server answers): taken before the slow start, so that a port in use is named at once and no other
    process takes it meanwhile.

    Raises:
        StageError: the port is in use, or `host` is not an address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise StageError(
            f"cannot listen on {host}:{port}: {error.strerror}; choose another --port or --host."
        ) from None
    return listening


def main(model: str, host: str, port: int, max_batch_size: int, max_body_bytes: int) -> int:
    """Serves `model`; `-` reads its path from standard input, once this process has imported TensorFlow: a
    server started before the model is written (the export's infra validation) is ready that much sooner."""
    import uvicorn

    listening = bound_socket(host, port)
    if model == "-":
        import tensorflow  # noqa: F401 - the slow part of the start, done while the model is being written

        model = sys.stdin.readline().strip()
        if not model:
            raise StageError("--model -: standard input closed before it named a model folder.")
    served = load_served_model(model)
    bound = listening.getsockname()[1]  # `--port 0`: the port the system chose
    print(f"serving {served.name} v{served.version} from {served.source} on http://{host}:{bound}", flush=True)
    settings = uvicorn.Config(create_app(served, max_batch_size, max_body_bytes), log_level="warning")
    uvicorn.Server(settings).run(sockets=[listening])
    return 0
