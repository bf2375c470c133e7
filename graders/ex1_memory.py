"""Exercise 1's checks, the collector's half: each calls the student's function on the judge's inputs
(judges/ex1_memory.py draws them and decides) and hands back what came out."""
from graders._collect import calls, check


def check_bytes_per_param(ns):
    check("ex1_memory", "bytes_per_param", ns, calls)


def check_memory_for_inference(ns):
    check("ex1_memory", "memory_for_inference", ns, calls)


def check_to_gb(ns):
    check("ex1_memory", "to_gb", ns, calls)


def check_memory_for_training(ns):
    check("ex1_memory", "memory_for_training", ns, calls)


def check_nf4_bits_per_param(ns):
    check("ex1_memory", "nf4_bits_per_param", ns, calls)


def check_memory_for_finetuning(ns):
    check("ex1_memory", "memory_for_finetuning", ns, calls)
