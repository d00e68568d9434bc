"""Compile selected specs for sm_90 (no GPU needed) and count the SASS instructions of each loop by opcode; how session 5 counted the table decode (import it, then report(spec) for specs from a module's compile_specs)."""
import sys, re, subprocess, tempfile, collections, os
sys.path.insert(0, "/work/main")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
from mxfp4.triton_kernels import aot

def sass_of(spec, cap=90):
    built = aot.compile_spec(spec, cap)
    tool = aot._cuobjdump()
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(built["cubin"]); f.flush()
        text = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    return built, text

def loops(text):
    """Backward branches (BRA to a lower address) delimit loops: [(start, end, [instructions])]."""
    lines = []
    for line in text.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            lines.append((int(m.group(1), 16), m.group(2).strip()))
    res = []
    for addr, ins in lines:
        t = re.search(r"BRA\s+(?:`?\(?)0x([0-9a-f]+)", ins)
        if t and int(t.group(1), 16) < addr:
            start = int(t.group(1), 16)
            res.append((start, addr, [i for a, i in lines if start <= a <= addr]))
    return res

def report(spec, elems_per_iter=None, cap=90):
    built, text = sass_of(spec, cap)
    print(f"== {spec['name']}: regs {built['registers']} local {built['local']} shared {built['shared']}")
    for start, end, body in loops(text):
        ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", i).split()[0].split(".")[0] for i in body)
        print(f"  loop {start:#x}-{end:#x}: {len(body)} instrs", dict(ops.most_common()))
    return text
