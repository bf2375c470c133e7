"""What crosses between a notebook's process and the judge: plain JSON, never a pickle.

`encode` turns what a student's code returned (numbers, strings, tensors, tuples, dicts...) into JSON-able
data; `decode` turns such data back into Python values, tensors rebuilt from raw bytes of a whitelisted
dtype. The judge decodes everything a notebook's process sends, so `decode` trusts nothing: it checks every
tag, type, dtype, shape and size, and raises `Malformed` (never anything else) for what it cannot read.

Tags are one-key dicts whose key starts with "$": {"$tensor": {...}}, {"$tuple": [...]}, {"$dict": [[k, v]...]}.
An object that is none of the known kinds travels as its type's name only ({"$object": "module.Name"}).
"""
import base64
import decimal
import math
import numbers

MAX_DEPTH = 12
MAX_ITEMS = 200_000  # values of every kind in one message, tensors' elements not counted
MAX_ELEMENTS = 4_000_000  # tensor elements in one message
MAX_TEXT = 100_000  # characters of one string
# A set's items and a dict's keys are hashed as they are decoded: ints chosen to collide (k * (2**61 - 1)) make
# that quadratic, so collections keyed by anything but strings are kept small.
MAX_HASHED = 2_000  # in one set or dict
MAX_HASHED_ALL = 20_000  # in one message
# dtype name -> (bytes per element, numpy dtype it travels as). bfloat16 travels as float32 (numpy has none).
DTYPES = {"float64": (8, "<f8"), "float32": (4, "<f4"), "float16": (2, "<f2"), "bfloat16": (4, "<f4"),
          "int64": (8, "<i8"), "int32": (4, "<i4"), "int16": (2, "<i2"), "int8": (1, "i1"), "uint8": (1, "u1"),
          "bool": (1, "?")}


class Malformed(ValueError):
    """Data that does not follow this module's schema (or breaks its limits)."""


# -------------------------------------------------------------------------------- encode (either side)
def encode(value, depth: int = 0):
    """`value` as JSON-able data. Never raises: what cannot be read travels as {"$object": type name}."""
    try:
        return _encode(value, depth)
    except Exception:  # noqa: BLE001 - a value whose methods fail is described by its type alone
        return {"$object": _type_name(value)}


def _type_name(value) -> str:
    kind = type(value)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"


def _encode(value, depth):
    if depth > MAX_DEPTH:
        return {"$object": "(nested too deeply)"}
    if value is None or type(value) in (bool, str):
        return value[:MAX_TEXT] if type(value) is str else value
    if type(value) is int:
        return value if abs(value) < 10**300 else {"$float": repr(float(value))}
    if type(value) is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    if module.startswith("torch"):
        import torch
        if isinstance(value, torch.Tensor):
            return {"$tensor": _tensor(value)}
        if isinstance(value, torch.dtype):
            return {"$dtype": str(value).replace("torch.", "")}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
    if module == "numpy":
        import numpy
        if isinstance(value, numpy.ndarray):
            import torch
            return {"$tensor": _tensor(torch.from_numpy(numpy.ascontiguousarray(value)))}
        if isinstance(value, numpy.bool_):
            return bool(value)
        if isinstance(value, numpy.integer):
            return int(value)
        if isinstance(value, numpy.floating):
            return _encode(float(value), depth)
    if isinstance(value, (list, tuple, set, frozenset)):
        tag = {list: "$list", tuple: "$tuple", set: "$set", frozenset: "$set"}.get(type(value))
        items = list(value)[:MAX_ITEMS]
        if tag is None:  # a subclass (a namedtuple, say): its items, tagged by what it is
            tag = "$tuple" if isinstance(value, tuple) else "$list" if isinstance(value, list) else "$set"
        return {tag: [_encode(item, depth + 1) for item in items]}
    if isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        pairs = [[_encode(k, depth + 1), _encode(value[k], depth + 1)] for k in list(value.keys())[:MAX_ITEMS]]
        return {"$dict": pairs}
    if isinstance(value, numbers.Integral):  # a subclass of int, numpy's and others (a bool is handled above)
        return _encode(int(value), depth)
    if isinstance(value, (numbers.Real, decimal.Decimal)):  # a float subclass, a Fraction, a Decimal
        return _encode(float(value), depth)
    if isinstance(value, str):
        return str.__str__(value)[:MAX_TEXT]
    return {"$object": _type_name(value)}


def _tensor(t) -> dict:
    info = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "requires_grad": bool(t.requires_grad),
            "device": t.device.type, "bytes": None}
    if t.device.type == "meta" or info["dtype"] not in DTYPES or t.numel() > MAX_ELEMENTS:
        return info  # shape and dtype only
    flat = t.detach().to("cpu").reshape(-1)
    if info["dtype"] == "bfloat16":
        flat = flat.float()
    info["bytes"] = base64.b64encode(flat.contiguous().numpy().tobytes()).decode("ascii")
    return info


# -------------------------------------------------------------------------------- decode (the judge)
class Opaque:
    """A value the notebook returned that is no number, string, tensor or collection: its type's name only."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self):
        return f"<a {self.type_name.rsplit('.', 1)[-1]}>"

    def __eq__(self, other):
        return isinstance(other, Opaque) and other.type_name == self.type_name

    def __hash__(self):
        return hash(self.type_name)


class MetaTensor:
    """A tensor that came without its values (on the meta device, too large, or of an unusual dtype)."""

    def __init__(self, dtype: str, shape: tuple, device: str, requires_grad: bool):
        self.dtype, self.shape, self.device, self.requires_grad = dtype, shape, device, requires_grad

    def __repr__(self):
        return f"<tensor {self.dtype} {self.shape} without values>"


class _Budget:
    def __init__(self):
        self.items = self.elements = self.hashed = 0

    def hash(self, values: list):
        """Values about to be hashed into a set or a dict that are not strings (whose hashes are salted)."""
        count = sum(1 for v in values if type(v) is not str)
        self.hashed += count
        if self.hashed > MAX_HASHED_ALL or (count and len(values) > MAX_HASHED):
            raise Malformed("sets or dicts of too many values that are not strings")

    def item(self):
        self.items += 1
        if self.items > MAX_ITEMS:
            raise Malformed(f"more than {MAX_ITEMS:,} values")

    def add(self, elements: int):
        self.elements += elements
        if self.elements > MAX_ELEMENTS:
            raise Malformed(f"tensors of more than {MAX_ELEMENTS:,} elements in all")


def decode(data, budget: _Budget = None, depth: int = 0):
    """Python values from `data` (as `encode` wrote it, or as anything else wrote it: checked)."""
    budget = budget or _Budget()
    budget.item()
    if depth > MAX_DEPTH + 2:
        raise Malformed("nested too deeply")
    if data is None or type(data) is bool:
        return data
    if type(data) is int:
        if abs(data) >= 10**300:
            raise Malformed("an integer too large")
        return data
    if type(data) is float:
        if not math.isfinite(data):
            raise Malformed("a bare non-finite float")
        return data
    if type(data) is str:
        if len(data) > MAX_TEXT:
            raise Malformed("a string too long")
        return data
    if type(data) is list:
        raise Malformed("a bare JSON list (collections are tagged)")
    if type(data) is not dict or len(data) != 1:
        raise Malformed(f"an unknown value of type {type(data).__name__}")
    (tag, body), = data.items()
    if tag in ("$list", "$tuple", "$set"):
        if type(body) is not list:
            raise Malformed(f"{tag} without a list")
        if tag == "$set":
            budget.hash(body)  # before anything is decoded: a tagged item is a dict here, never a str
        items = [decode(item, budget, depth + 1) for item in body]
        if tag == "$list":
            return items
        if tag == "$tuple":
            return tuple(items)
        try:
            return frozenset(items)
        except TypeError:
            raise Malformed("a set of unhashable values") from None
    if tag == "$dict":
        if type(body) is not list:
            raise Malformed("$dict without a list of pairs")
        budget.hash([p[0] if type(p) is list and p else None for p in body])
        out = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise Malformed("$dict with a pair that is not [key, value]")
            key = decode(pair[0], budget, depth + 1)
            if isinstance(key, list):
                key = tuple(key)
            try:
                out[key] = decode(pair[1], budget, depth + 1)
            except TypeError:
                raise Malformed("$dict with an unhashable key") from None
        return out
    if tag == "$float":
        if body not in ("nan", "inf", "-inf"):
            raise Malformed("$float that is not nan, inf or -inf")
        return float(body)
    if tag == "$tensor":
        return _decode_tensor(body, budget)
    if tag == "$dtype":
        import torch
        if type(body) is not str or not isinstance(getattr(torch, body, None), torch.dtype):
            raise Malformed("$dtype that names no torch dtype")
        return getattr(torch, body)
    if tag == "$device":
        if type(body) is not str or len(body) > 40:
            raise Malformed("$device that is not a short string")
        return body
    if tag == "$object":
        if type(body) is not str or len(body) > 300:
            raise Malformed("$object without a short type name")
        return Opaque(body)
    raise Malformed(f"an unknown tag {tag[:40]!r}")


def _decode_tensor(body, budget: _Budget):
    import numpy
    import torch
    if type(body) is not dict or set(body) != {"dtype", "shape", "requires_grad", "device", "bytes"}:
        raise Malformed("$tensor without exactly dtype, shape, requires_grad, device and bytes")
    dtype, shape, raw = body["dtype"], body["shape"], body["bytes"]
    if type(shape) is not list or len(shape) > 8 or any(type(n) is not int or not 0 <= n <= MAX_ELEMENTS for n in shape):
        raise Malformed("$tensor with a bad shape")
    if type(body["requires_grad"]) is not bool or type(body["device"]) is not str or len(body["device"]) > 20:
        raise Malformed("$tensor with a bad requires_grad or device")
    if type(dtype) is not str or len(dtype) > 40:
        raise Malformed("$tensor with a bad dtype")
    numel = math.prod(shape)
    if raw is None:
        if numel > 10**12:
            raise Malformed("$tensor too large even to describe")
        return MetaTensor(dtype, tuple(shape), body["device"], body["requires_grad"])
    if dtype not in DTYPES or type(raw) is not str:
        raise Malformed("$tensor with values of an unknown dtype")
    budget.add(numel)
    size, numpy_dtype = DTYPES[dtype]
    if len(raw) != 4 * ((numel * size + 2) // 3):
        raise Malformed("$tensor whose bytes do not match its shape")
    try:
        buffer = base64.b64decode(raw, validate=True)
    except ValueError:
        raise Malformed("$tensor whose bytes are not base64") from None
    if len(buffer) != numel * size:
        raise Malformed("$tensor whose bytes do not match its shape")
    array = numpy.frombuffer(buffer, dtype=numpy.dtype(numpy_dtype)).copy()
    tensor = torch.from_numpy(array).reshape(shape)
    if dtype == "bfloat16":
        tensor = tensor.to(torch.bfloat16)
    tensor.requires_grad_(False)
    return tensor
