"""Hidden checks for Exercise 1 (memory calculator).

Each check grades one answer on fixed facts from the lesson and on parameter counts drawn with a
fresh seed, with reference versions of the answer's dependencies swapped in."""
import math
import random
from collections.abc import Mapping

from graders._core import as_number, call, fail, fresh_seed, lookup, passed, seeded, using_reference

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 0.5}
TRAINING_BYTES = {"weights_bf16": 2, "gradients_bf16": 2, "adam_momentum": 4, "adam_variance": 4}
UNKNOWN_DTYPES = ["int3", "float12", "qint7", "not-a-dtype"]  # nothing a student would map on purpose


# Reference answers: swapped in so that one answer's mistake never costs another answer's points.
def bytes_per_param(dtype):
    if dtype not in BYTES:
        raise ValueError(f"unknown dtype {dtype!r}")
    return BYTES[dtype]


def memory_for_inference(num_params, dtype="float16"):
    return num_params * bytes_per_param(dtype)


def memory_for_training(num_params):
    parts = {key: num_params * size for key, size in TRAINING_BYTES.items()}
    parts["total"] = sum(parts.values())
    return parts


def to_gb(num_bytes):
    return num_bytes / 1e9


REFERENCE = {"bytes_per_param": bytes_per_param, "memory_for_inference": memory_for_inference,
             "memory_for_training": memory_for_training, "to_gb": to_gb}


def _param_counts(seed):
    """Parameter counts from GPT-2 small to beyond 70B, odd ones included (int4 gives half bytes)."""
    with seeded(seed):
        counts = [random.randint(10**6, 10**8), random.randint(10**8, 10**10) | 1,
                  random.randint(10**10, 2 * 10**11)]
    return [124_439_808, 7_000_000_000] + counts


def _must_refuse(attempt, name, what, kind, why=""):
    """`attempt()` passes an input the answer cannot know (a `kind`): it must raise ValueError (or KeyError),
    never return a figure."""
    try:
        result = attempt()
    except (ValueError, KeyError):
        return
    except NotImplementedError:
        fail(f"{name} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    except Exception as error:  # noqa: BLE001
        fail(f"{what} raised {type(error).__name__}: {error}; an unknown {kind} should raise ValueError (or "
             "KeyError) with a message naming it.")
    fail(f"{what} returned {result!r} for a {kind} it does not know; it should raise ValueError (or KeyError){why}.")


def check_bytes_per_param(ns):
    fn = lookup(ns, "bytes_per_param")
    for dtype, expected in BYTES.items():
        got = as_number(call(fn, dtype, what=f"bytes_per_param({dtype!r})"), f"bytes_per_param({dtype!r})")
        if got == 8 * expected:
            fail(f"bytes_per_param({dtype!r}) returned {got:g}: that is bits; the answer is in bytes "
                 f"({expected:g}).")
        if not math.isclose(got, expected, rel_tol=1e-9):
            fail(f"bytes_per_param({dtype!r}): expected {expected:g} bytes, got {got:g}.")
    seed = fresh_seed()
    with seeded(seed):
        unknown = random.choice(UNKNOWN_DTYPES)
    _must_refuse(lambda: fn(unknown), "bytes_per_param", f"bytes_per_param({unknown!r})", "dtype",
                 ", so a typo can't silently turn into a memory figure")
    passed("bytes_per_param: float32 4, float16 2, bfloat16 2, int8 1, int4 0.5, and an unknown dtype raises.")


def check_memory_for_inference(ns):
    fn = lookup(ns, "memory_for_inference")
    seed = fresh_seed()
    with using_reference(ns, bytes_per_param=bytes_per_param):
        for n in _param_counts(seed):
            for dtype, size in BYTES.items():
                what = f"memory_for_inference({n:_}, {dtype!r})"
                got = as_number(call(fn, n, dtype, what=what), what)
                expected = n * size
                if math.isclose(got, expected / 1e9, rel_tol=1e-6) or math.isclose(got, expected / 2**30, rel_tol=1e-6):
                    fail(f"{what} returned {got:,.3f}: that looks like GB; the answer is in bytes "
                         f"({expected:,.1f}). Convert with to_gb only when you print. (seed {seed})")
                if math.isclose(got, 8 * expected, rel_tol=1e-9):
                    fail(f"{what} returned {got:,.0f}: that is bits; expected {expected:,.1f} bytes. (seed {seed})")
                if abs(got - expected) > 1:  # 1 byte of slack: rounding a packed int4 count up is fine
                    fail(f"{what}: expected {expected:,.1f} bytes ({size:g} per parameter), got {got:,.1f}. "
                         f"(seed {seed})")
            what = f"memory_for_inference({n:_}) with the default dtype"
            got = as_number(call(fn, n, what=what), what)
            if abs(got - 2 * n) > 1:
                fail(f"{what}: the default dtype is float16, so expected {2 * n:,} bytes, got {got:,.1f}. "
                     f"(seed {seed})")
            what = f"memory_for_inference({n:_}, dtype='int8')"
            got = as_number(call(fn, n, dtype="int8", what=what), what)
            if abs(got - n) > 1:
                fail(f"{what} (dtype passed by keyword): expected {n:,} bytes, got {got:,.1f}. (seed {seed})")
    passed(f"memory_for_inference: every dtype on {len(_param_counts(seed))} parameter counts (seed {seed}).")


def check_memory_for_training(ns):
    fn = lookup(ns, "memory_for_training")
    seed = fresh_seed()
    with using_reference(ns, bytes_per_param=bytes_per_param, memory_for_inference=memory_for_inference,
                         to_gb=to_gb):
        for n in _param_counts(seed):
            what = f"memory_for_training({n:_})"
            parts = call(fn, n, what=what)
            if not isinstance(parts, Mapping):
                fail(f"{what} should return a dict, but it returned a {type(parts).__name__}.")
            missing = [key for key in [*TRAINING_BYTES, "total"] if key not in parts]
            if missing:
                fail(f"{what} returned a dict without the key(s) {missing}; it needs "
                     f"{[*TRAINING_BYTES, 'total']} (it has {list(parts)}).")
            values = {key: as_number(parts[key], f"{what}[{key!r}]") for key in [*TRAINING_BYTES, "total"]}
            for key, size in TRAINING_BYTES.items():
                if abs(values[key] - n * size) > 1:
                    per = values[key] / n
                    fail(f"{what}[{key!r}]: expected {n * size:,} bytes ({size} per parameter), got "
                         f"{values[key]:,.1f} ({per:g} per parameter). (seed {seed})")
            if abs(values["total"] - 12 * n) > 1:
                fail(f"{what}['total']: expected {12 * n:,} bytes (2 + 2 + 4 + 4 = 12 per parameter), got "
                     f"{values['total']:,.1f} ({values['total'] / n:g} per parameter). (seed {seed})")
    passed(f"memory_for_training: all four parts and the total on {len(_param_counts(seed))} parameter counts "
           f"(seed {seed}).")


def check_to_gb(ns):
    fn = lookup(ns, "to_gb")
    seed = fresh_seed()
    with seeded(seed):
        sizes = [84_000_000_000, 248_879_616, 1] + [random.randint(1, 10**12) for _ in range(5)]
    for num_bytes in sizes:
        got = as_number(call(fn, num_bytes, what=f"to_gb({num_bytes:_})"), f"to_gb({num_bytes:_})")
        expected = num_bytes / 1e9
        if math.isclose(got, num_bytes / 2**30, rel_tol=1e-9) and num_bytes > 1:
            fail(f"to_gb({num_bytes:_}) returned {got!r}: that is GiB (2**30 bytes); the course uses decimal GB, "
                 f"1 GB = 10**9 bytes, so expected {expected!r}.")
        if not math.isclose(got, expected, rel_tol=1e-9):
            fail(f"to_gb({num_bytes:_}): expected {expected!r} (bytes / 1e9, not rounded), got {got!r}. "
                 f"(seed {seed})")
    passed(f"to_gb: {len(sizes)} sizes, decimal GB (seed {seed}).")


# ---------------------------------------------------------------- Part 7: LoRA and QLoRA
def nf4_bits_per_param(double_quant=True, block_size=64, scale_block_size=256):
    if double_quant:
        return 4 + 8 / block_size + 32 / (block_size * scale_block_size)
    return 4 + 32 / block_size


FINETUNING_METHODS = ("full", "lora", "qlora")
UNKNOWN_METHODS = ["qlora8", "adapter", "Full-finetune", "dora"]


def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    if method == "full":
        base, adapter = memory_for_training(num_params)["total"], 0
    elif method == "lora":
        base, adapter = memory_for_inference(num_params, "bfloat16"), memory_for_training(adapter_params)["total"]
    elif method == "qlora":
        base = num_params * nf4_bits_per_param(double_quant) / 8
        adapter = memory_for_training(adapter_params)["total"]
    else:
        raise ValueError(f"unknown method {method!r}")
    return {"base": base, "adapter": adapter, "total": base + adapter}


def check_nf4_bits_per_param(ns):
    fn = lookup(ns, "nf4_bits_per_param")
    lesson = [((), {}, 4 + 8 / 64 + 32 / (64 * 256), "nf4_bits_per_param()"),
              ((True,), {}, 4 + 8 / 64 + 32 / (64 * 256), "nf4_bits_per_param(True)"),
              ((False,), {}, 4.5, "nf4_bits_per_param(False)"),
              ((), {"double_quant": False}, 4.5, "nf4_bits_per_param(double_quant=False)")]
    for args, kwargs, expected, what in lesson:
        got = as_number(call(fn, *args, what=what, **kwargs), what)
        if math.isclose(got, expected / 8, rel_tol=1e-9):
            fail(f"{what} returned {got!r}: that is bytes; the answer is in bits ({expected!r}).")
        if math.isclose(got, 4.125, rel_tol=1e-9) and expected != 4.5:
            fail(f"{what} returned 4.125 = 4 + 8/64: the 8-bit block scales need float32 constants of their own, "
                 f"one per 256 blocks, 32/(64*256) bit more per weight: expected {expected!r}.")
        if not math.isclose(got, expected, rel_tol=1e-9):
            fail(f"{what}: expected {expected!r} bits per weight, got {got!r}.")
    seed = fresh_seed()
    with seeded(seed):
        cases = [(random.choice([32, 64, 128, 256, 1024]), random.choice([64, 128, 256, 512])) for _ in range(4)]
    for block_size, scale_block_size in cases:
        for dq in (True, False):
            what = f"nf4_bits_per_param(double_quant={dq}, block_size={block_size}, scale_block_size={scale_block_size})"
            got = as_number(call(fn, double_quant=dq, block_size=block_size, scale_block_size=scale_block_size,
                                 what=what), what)
            expected = nf4_bits_per_param(dq, block_size, scale_block_size)
            if not math.isclose(got, expected, rel_tol=1e-9):
                fail(f"{what}: expected {expected!r} (4 bits + the scales' bits spread over the weights they serve), "
                     f"got {got!r}. (seed {seed})")
    passed(f"nf4_bits_per_param: 4.5 bits, 4.126953125 with double quantization, and {len(cases)} other block "
           f"sizes (seed {seed}).")


def _finetuning_cases(seed):
    lesson = [(7_000_000_000, 16_777_216), (8_030_261_248, 27_262_976), (124_439_808, 294_912)]
    with seeded(seed):
        fresh = [(random.randint(10**8, 2 * 10**11), random.randint(10**5, 10**8)) for _ in range(4)]
        fresh.append((random.randint(10**6, 10**8) | 1, random.randint(1, 10**4) | 1))
    return lesson + fresh


def check_memory_for_finetuning(ns):
    fn = lookup(ns, "memory_for_finetuning")
    seed = fresh_seed()
    with using_reference(ns, bytes_per_param=bytes_per_param, memory_for_inference=memory_for_inference,
                         memory_for_training=memory_for_training, to_gb=to_gb, nf4_bits_per_param=nf4_bits_per_param):
        for n, a in _finetuning_cases(seed):
            calls = [("full", {}, f"memory_for_finetuning({n:_}, 'full')"),
                     ("lora", {"adapter_params": a}, f"memory_for_finetuning({n:_}, 'lora', adapter_params={a:_})"),
                     ("qlora", {"adapter_params": a}, f"memory_for_finetuning({n:_}, 'qlora', adapter_params={a:_})"),
                     ("qlora", {"adapter_params": a, "double_quant": False},
                      f"memory_for_finetuning({n:_}, 'qlora', adapter_params={a:_}, double_quant=False)")]
            for method, kwargs, what in calls:
                parts = call(fn, n, method, what=what, **kwargs)
                if not isinstance(parts, Mapping):
                    fail(f"{what} should return a dict, but it returned a {type(parts).__name__}.")
                missing = [key for key in ("base", "adapter", "total") if key not in parts]
                if missing:
                    fail(f"{what} returned a dict without the key(s) {missing}; it needs 'base', 'adapter' and "
                         f"'total' (it has {list(parts)}).")
                want = memory_for_finetuning(n, method, **kwargs)
                got = {key: as_number(parts[key], f"{what}[{key!r}]") for key in ("base", "adapter", "total")}
                explain = {
                    "full": {"base": "12 bytes per parameter: memory_for_training's total",
                             "adapter": "full finetuning has no adapter: 0"},
                    "lora": {"base": "the frozen base in bfloat16, 2 bytes per parameter: no gradients, no Adam "
                                     "states",
                             "adapter": "the adapter trains like a full model, 12 bytes per adapter parameter"},
                    "qlora": {"base": f"the frozen base in NF4, nf4_bits_per_param({kwargs.get('double_quant', True)})"
                                      f" / 8 bytes per parameter",
                              "adapter": "the adapter trains like a full model, 12 bytes per adapter parameter"},
                }[method]
                for key in ("base", "adapter"):
                    if abs(got[key] - want[key]) > 1 + 1e-9 * want[key]:
                        per = got[key] / (n if key == "base" else max(a, 1))
                        fail(f"{what}[{key!r}]: expected {want[key]:,.1f} bytes ({explain[key]}), got "
                             f"{got[key]:,.1f} ({per:.6g} bytes per {'parameter' if key == 'base' else 'adapter parameter'})."
                             f" (seed {seed})")
                if abs(got["total"] - want["total"]) > 2 + 1e-9 * want["total"]:
                    fail(f"{what}['total']: expected base + adapter = {want['total']:,.1f} bytes, got "
                         f"{got['total']:,.1f}. (seed {seed})")
        with seeded(seed):
            unknown = random.choice(UNKNOWN_METHODS)
        _must_refuse(lambda: fn(7_000_000_000, unknown, adapter_params=1000), "memory_for_finetuning",
                     f"memory_for_finetuning(7_000_000_000, {unknown!r})", "method")
    passed(f"memory_for_finetuning: full, LoRA and QLoRA (with and without double quantization) on "
           f"{len(_finetuning_cases(seed))} (model, adapter) sizes, and an unknown method raises (seed {seed}).")
