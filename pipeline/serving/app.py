"""`pipeline serve`: an HTTP API over an exported SavedModel, in the TF Serving REST API's shape.

- `POST /v1/models/<name>:predict` with `{"instances": [...]}` (row format) or `{"inputs": ...}`
  (columnar format) returns `{"predictions": [...]}`, as TF Serving does;
- `GET /v1/models/<name>` (version status), `GET /v1/models/<name>/metadata` (signature),
  `GET /health`.

Every request is checked against the schema saved with the model (`assets.extra/pipeline_spec.json`:
columns, types, ranges, categories, image shape) before the model sees it: a bad request gets a
4xx naming the field and the problem, never a 500, and the server keeps serving.
"""

import json
import logging
import math
import re
from typing import Any

import numpy as np

from pipeline.serving.loading import ServedModel, load_served_model
from pipeline.serving.saved_model import SIGNATURE

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request the model cannot answer; `status` is the HTTP status to reply with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _number(value: Any, field: str, allow_missing: bool) -> float:
    if value is None and allow_missing:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{field}: expected a number, got {json.dumps(value)}")
    if not math.isfinite(value):
        raise RequestError(f"{field}: expected a finite number, got {value}")
    return float(value)


def _image_batch(instances: list, spec: dict) -> dict[str, np.ndarray]:
    image = spec["image"]
    shape = (image["height"], image["width"], image["channels"])
    batch = np.empty((len(instances), *shape), dtype=np.float32)
    for index, instance in enumerate(instances):
        field = f"instances[{index}]"
        if isinstance(instance, dict):
            if set(instance) != {"image"}:
                raise RequestError(f'{field}: expected {{"image": pixels}}, got keys {sorted(instance)}')
            instance, field = instance["image"], f"{field}.image"
        try:
            pixels = np.asarray(instance, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise RequestError(f"{field}: expected nested lists of numbers ({error})") from None
        if pixels.shape == shape[:2] and shape[2] == 1:
            pixels = pixels[..., None]
        if pixels.shape != shape:
            raise RequestError(
                f"{field}: expected shape {list(shape)} (height, width, channels), got {list(pixels.shape)}"
            )
        if not np.isfinite(pixels).all():
            raise RequestError(f"{field}: pixels must be finite numbers (found NaN or infinity)")
        if pixels.min() < 0 or pixels.max() > 255:
            raise RequestError(
                f"{field}: pixels must be raw values in [0, 255], got [{pixels.min():g}, {pixels.max():g}]"
            )
        batch[index] = pixels
    return {"image": batch}


def _table_batch(instances: list, spec: dict) -> dict[str, np.ndarray]:
    schema_columns = (spec.get("schema") or {}).get("columns", {})
    features = spec["features"]
    known = {feature["column"] for feature in features}
    ignored = set(spec.get("dropped_columns", []))  # data.drop_columns: rows of the training file still hold them
    columns: dict[str, list] = {feature["name"]: [] for feature in features}
    for index, instance in enumerate(instances):
        field = f"instances[{index}]"
        if not isinstance(instance, dict):
            raise RequestError(f"{field}: expected an object of column values, got {type(instance).__name__}")
        unknown = sorted(set(instance) - known - ignored)
        if unknown:
            raise RequestError(f"{field}: unknown column {unknown[0]!r}; the model reads {sorted(known)}")
        for feature in features:
            column, rules = feature["column"], schema_columns.get(feature["column"], {})
            allow_missing = rules.get("max_null_fraction", 1.0) > 0
            if column not in instance and not allow_missing:
                raise RequestError(f"{field}.{column}: missing; this column is required")
            value = instance.get(column)
            if feature["type"] == "numeric":
                number = _number(value, f"{field}.{column}", allow_missing)
                low, high = rules.get("range", [None, None])
                if not math.isnan(number) and (
                    (low is not None and number < low) or (high is not None and number > high)
                ):
                    raise RequestError(f"{field}.{column}: {number:g} is outside the trained range [{low}, {high}]")
                columns[feature["name"]].append([number])
            else:
                if value is None and allow_missing:
                    columns[feature["name"]].append([""])
                    continue
                if not isinstance(value, str):
                    raise RequestError(f"{field}.{column}: expected a string, got {json.dumps(value)}")
                allowed = rules.get("categories")
                if allowed is not None and value not in allowed:
                    raise RequestError(
                        f"{field}.{column}: {value!r} is not a known category; expected one of {allowed}"
                    )
                columns[feature["name"]].append([value])
    return {
        feature["name"]: np.asarray(
            columns[feature["name"]], dtype=np.float32 if feature["type"] == "numeric" else object
        ).reshape(-1, 1)
        for feature in features
    }


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


def instances_from_body(body: Any, spec: dict) -> list:
    """The request's examples as a list, from TF Serving's row (`instances`) or columnar (`inputs`) format."""
    if not isinstance(body, dict) or (("instances" in body) == ("inputs" in body)):
        raise RequestError('expected a JSON object with either "instances" (a list of examples) or "inputs"')
    if "instances" in body:
        if not isinstance(body["instances"], list):
            raise RequestError('"instances" must be a list of examples')
        return body["instances"]
    inputs = body["inputs"]
    if spec["kind"] == "image":
        if isinstance(inputs, dict):
            inputs = inputs.get("image")
        if not isinstance(inputs, list):
            raise RequestError('"inputs" must be a list of images (or {"image": [...]})')
        return inputs
    if not isinstance(inputs, dict) or not inputs:
        raise RequestError('"inputs" must be an object of columns, each a list of values')
    lengths = {len(values) if isinstance(values, list) else -1 for values in inputs.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise RequestError('"inputs": every column must be a list, all of the same length')
    (count,) = lengths
    return [{column: values[row] for column, values in inputs.items()} for row in range(count)]


def validate_request(body: Any, spec: dict, max_batch_size: int) -> dict[str, np.ndarray]:
    """Model inputs for a parsed request body; raises RequestError naming what is wrong."""
    instances = instances_from_body(body, spec)
    if not instances:
        raise RequestError("the request holds no examples")
    if len(instances) > max_batch_size:
        raise RequestError(f"a batch of {len(instances)} examples exceeds the limit of {max_batch_size}", status=413)
    if spec["kind"] == "image":
        return _image_batch(instances, spec)
    return _table_batch(instances, spec)


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
            "pipeline_spec": {key: model.spec.get(key) for key in ("kind", "task", "classes", "schema")},
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
            inputs = validate_request(parse_body(raw), model.spec, max_batch_size)
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
        return 200, {"predictions": np.asarray(outputs).tolist()}

    return app


def main(model: str, host: str, port: int, max_batch_size: int, max_body_bytes: int) -> int:
    import uvicorn

    served = load_served_model(model)
    print(f"serving {served.name} v{served.version} from {served.source} on http://{host}:{port}", flush=True)
    uvicorn.run(create_app(served, max_batch_size, max_body_bytes), host=host, port=port, log_level="warning")
    return 0
