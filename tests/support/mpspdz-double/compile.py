#!/usr/bin/env python3
"""TEST DOUBLE for MP-SPDZ's `compile.py` (see shamir-party.x beside it): checks the invocation
secagg's program cache makes (`compile.py --prime=<p> server_key` in a build directory holding
Programs/Source/server_key.mpc, the party count in SECAGG_MPSPDZ_PARTIES) and writes stand-in
schedule and bytecode files."""
import os
import sys

args = sys.argv[1:]
assert len(args) == 2 and args[0].startswith("--prime=") and args[1] == "server_key", args
assert args[0][len("--prime="):].isdigit(), args[0][:40]
n = os.environ["SECAGG_MPSPDZ_PARTIES"]
assert n.isdigit() and int(n) >= 3, n
assert os.path.isfile("Programs/Source/server_key.mpc")
os.makedirs("Programs/Schedules", exist_ok=True)
os.makedirs("Programs/Bytecode", exist_ok=True)
with open("Programs/Schedules/server_key.sch", "w") as f:
    f.write("mpspdz-double schedule n=%s\n" % n)
with open("Programs/Bytecode/server_key-0.bc", "wb") as f:
    f.write(b"mpspdz-double bytecode n=" + n.encode())
