# Sourced by the command-line tests (this folder is not a test itself).
#   same_shards A_DIR B_DIR   every dataset and attribute of two shard sets,
#                             compared (needs python=1 and python3 with h5py;
#                             otherwise says it skipped)
same_shards() {
    if (( ! python )); then echo "shard comparison: skipped (no python3 with h5py)"; return; fi
    python3 - "$1" "$2" <<'EOF'
import glob, os, sys
import h5py, numpy as np
a_dir, b_dir = sys.argv[1:]
names = sorted(os.path.basename(p) for p in glob.glob(f"{a_dir}/shard_*.h5"))
assert names and names == sorted(os.path.basename(p) for p in glob.glob(f"{b_dir}/shard_*.h5")), "shard files differ"
def walk(g, out, prefix=""):
    out[prefix + "@"] = {k: np.asarray(v).tolist() for k, v in g.attrs.items()}
    for k, v in g.items():
        if isinstance(v, h5py.Group): walk(v, out, prefix + k + "/")
        else: out[prefix + k] = (v.dtype.str, v[()])
    return out
for n in names:
    a, b = walk(h5py.File(f"{a_dir}/{n}", "r"), {}), walk(h5py.File(f"{b_dir}/{n}", "r"), {})
    assert a.keys() == b.keys(), f"{n}: objects differ"
    for k in a:
        if k.endswith("@"): assert a[k] == b[k], f"{n}: attributes of /{k[:-1]} differ"
        else: assert a[k][0] == b[k][0] and np.array_equal(a[k][1], b[k][1]), f"{n}: /{k} differs"
print(f"{a_dir} == {b_dir}: {len(names)} shards")
EOF
}
