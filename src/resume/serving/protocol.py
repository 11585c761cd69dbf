"""Request parsing shared by the predictors: KServe v1 instances and v2 tensors, with typed 400 errors.

Every check raises kserve's `InvalidInput` (HTTP 400, gRPC INVALID_ARGUMENT) whose message names the
field, the bad value and what is allowed, e.g. `instances[1].k: must be an integer in 1..50, got 0`.
Also: `import_kserve()`, which imports kserve without letting it parse this process's command line
(kserve 0.21 runs `argparse.parse_known_args()` at import time).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def import_kserve():
    """Import kserve with an empty argv, so its import-time argument parsing sees nothing of ours."""
    if "kserve" in sys.modules:
        return sys.modules["kserve"]
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
    finally:
        sys.argv = argv
    return kserve


import_kserve()

from kserve.errors import InvalidInput  # noqa: E402
from kserve.protocol.infer_type import InferRequest  # noqa: E402


def type_name(v: Any) -> str:
    return "null" if v is None else {str: "string", bool: "boolean", int: "integer", float: "number",
                                     list: "list", dict: "object"}.get(type(v), type(v).__name__)


def short(v: Any, n: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def v1_instances(payload: Any, *, max_instances: int) -> list[Any]:
    """The `instances` list of a v1 body (`{"instances": [...]}`), checked for shape and size.

    kserve hands over the raw bytes when the Content-Type is not JSON (e.g. `curl -d`): parsed here."""
    if isinstance(payload, bytes | str):
        try:
            payload = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInput(f"request body is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f'request body must be a JSON object {{"instances": [...]}}, got {type_name(payload)}')
    if "instances" not in payload:
        extra = f"; got keys {sorted(payload)[:5]}" if payload else ""
        raise InvalidInput(f'missing field "instances" (expected {{"instances": [...]}}){extra}')
    inst = payload["instances"]
    if not isinstance(inst, list):
        raise InvalidInput(f'"instances" must be a list, got {type_name(inst)}')
    if not inst:
        raise InvalidInput('"instances" is empty; send at least one instance')
    if len(inst) > max_instances:
        raise InvalidInput(f'"instances" has {len(inst)} items; at most {max_instances} per request')
    return inst


def check_fields(obj: dict, where: str, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise InvalidInput(f"{where}: unknown field {unknown[0]!r}; allowed fields: {', '.join(allowed)}")


def check_text(v: Any, where: str, *, max_chars: int, what: str = "text") -> str:
    """A non-empty string of at most `max_chars` characters that UTF-8 can encode.

    JSON allows escapes of lone surrogates (`"\\ud800"`) that decode to a Python string no tokenizer or
    response encoder accepts: they are refused here, with 400, before the string reaches a shared batch."""
    if not isinstance(v, str):
        raise InvalidInput(f"{where}: expected a string, got {type_name(v)} {short(v)}")
    if not v.strip():
        raise InvalidInput(f"{where}: empty {what}")
    if len(v) > max_chars:
        raise InvalidInput(f"{where}: {len(v)} characters; at most {max_chars} allowed")
    try:
        if not v.isascii():  # ASCII (most queries) is encodable; isascii is O(1) on CPython's str
            v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInput(f"{where}: not valid Unicode text: a lone surrogate {v[e.start]!r} at character "
                           f"{e.start} (UTF-8 cannot encode it)") from None
    return v


def check_int(v: Any, where: str, lo: int, hi: int, why: str = "") -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise InvalidInput(f"{where}: expected an integer, got {type_name(v)} {short(v)}")
    if not lo <= v <= hi:
        raise InvalidInput(f"{where}: must be an integer in {lo}..{hi}{why}, got {v}")
    return v


def check_bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise InvalidInput(f"{where}: expected true or false, got {type_name(v)} {short(v)}")
    return v


# ------------------------------------------------------------------------------------------------ v2


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list | tuple):
        out = []
        for d in data:
            out.extend(_flatten(d))
        return out
    return [data]


def v2_input(req: InferRequest, name: str, *, required: bool = True):
    for inp in req.inputs:
        if inp.name == name:
            return inp
    if required:
        got = ", ".join(repr(i.name) for i in req.inputs) or "none"
        raise InvalidInput(f"missing input {name!r} (got inputs: {got})")
    return None


def v2_check_inputs(req: InferRequest, allowed: tuple[str, ...]) -> None:
    for inp in req.inputs:
        if inp.name not in allowed:
            raise InvalidInput(f"unknown input {inp.name!r}; allowed inputs: {', '.join(allowed)}")


def v2_strings(req: InferRequest, name: str, *, max_items: int) -> list[Any]:
    """A BYTES input as a flat list of Python strings (bytes decoded as UTF-8); not-strings are kept as is
    so the caller's per-item checks name them."""
    inp = v2_input(req, name)
    if inp.datatype != "BYTES":
        raise InvalidInput(f"input {name!r}: datatype must be BYTES, got {inp.datatype}")
    if getattr(inp, "_raw_data", None) is not None:
        values = list(inp.as_numpy().reshape(-1))
    else:
        values = _flatten(inp.data if inp.data is not None else [])
    n = 1
    for s in inp.shape or []:
        n *= int(s)
    if len(values) != n:
        raise InvalidInput(f"input {name!r}: shape {inp.shape} does not match its {len(values)} data items")
    if not values:
        raise InvalidInput(f"input {name!r} is empty; send at least one item")
    if len(values) > max_items:
        raise InvalidInput(f"input {name!r} has {len(values)} items; at most {max_items} per request")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"input {name!r}[{i}]: not valid UTF-8") from None
        out.append(v)
    return out


def v2_scalar(req: InferRequest, name: str, default: Any = None) -> Any:
    """An optional scalar given as a one-element input tensor or as a request parameter."""
    inp = v2_input(req, name, required=False)
    if inp is not None:
        vals = list(inp.as_numpy().reshape(-1)) if getattr(inp, "_raw_data", None) is not None \
            else _flatten(inp.data)
        if len(vals) != 1:
            raise InvalidInput(f"input {name!r}: expected one value, got {len(vals)}")
        v = vals[0]
        return v.item() if hasattr(v, "item") else v
    params = req.parameters or {}
    if name in params:
        v = params[name]
        # gRPC parameters arrive as InferParameter messages
        for attr in ("int64_param", "bool_param", "string_param", "double_param"):
            if hasattr(v, "HasField") and v.HasField(attr):
                return getattr(v, attr)
        return v
    return default
