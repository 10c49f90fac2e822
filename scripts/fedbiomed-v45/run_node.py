"""One Fed-BioMed node: server-key setup through Fed-BioMed's SecaggServkeySetup, then a
Joye-Libert encryption with Fed-BioMed's SecaggCrypter call signature.
argv: RESEARCHER_ID SECAGG_ID JOB_ID EXCHANGE_DIR NODE_INDEX PARTY_ID..."""
import json, os, random, sys, time

import secagg.fedbiomed as s
print("install:", s.install(), flush=True)

from fedbiomed.node.environ import environ
from fedbiomed.node.secagg import SecaggServkeySetup
from fedbiomed.node.secagg_manager import SKManager, BPrimeManager
from fedbiomed.common.secagg import SecaggCrypter
import fedbiomed.node.secagg as nsecagg

researcher_id, secagg_id, job_id, xdir, idx = sys.argv[1:6]
parties = sys.argv[6:]
idx = int(idx)
me = environ["ID"]
assert type(nsecagg._CManager).__module__ == "secagg.fedbiomed", type(nsecagg._CManager)
assert type(SKManager).__module__ == "secagg.fedbiomed", type(SKManager)

t0 = time.time()
setup = SecaggServkeySetup(researcher_id=researcher_id, secagg_id=secagg_id, sequence=123,
                           parties=parties, job_id=job_id)
reply = setup.setup()
print(f"[{me}] setup reply ({time.time()-t0:.1f}s):", reply, flush=True)
out = {"node_id": me, "reply": reply}
if reply["success"]:
    entry = SKManager.get(secagg_id, job_id)
    print(f"[{me}] SKManager.get -> keys {sorted(entry)} parties={entry['parties']}", flush=True)
    sk = entry["context"]["server_key"]
    out["sk"] = sk
    out["entry_parties"] = entry["parties"]
    # left-over files in the MPC dir (key files should be gone)
    out["mpc_files_left"] = sorted(os.listdir(setup._MPC.tmp_dir)) + sorted(os.listdir(setup._MPC.mpc_data_dir))
    bp = BPrimeManager.get("default_biprime0")
    biprime = bp["context"]["biprime"]
    rng = random.Random(1000 + idx)
    params = [rng.uniform(-2.5, 2.5) for _ in range(300)]
    secagg_random = 0.4242  # the researcher's validation value (Fed-BioMed's secagg_random)
    crypter = SecaggCrypter()
    t1 = time.time()
    enc = crypter.encrypt(num_nodes=len(parties) - 1, current_round=3, params=params, key=sk,
                          biprime=biprime, clipping_range=None, weight=17 + idx)
    enc_rand = crypter.encrypt(num_nodes=len(parties) - 1, current_round=3, params=[secagg_random],
                               key=sk, biprime=biprime, clipping_range=None, weight=17 + idx)
    print(f"[{me}] encrypted {len(params)} params into {len(enc)} ints in {time.time()-t1:.1f}s", flush=True)
    out.update(params=params, enc=enc, enc_rand=enc_rand)
tmp = os.path.join(xdir, f".{me}.json")
with open(tmp, "w") as f:
    json.dump(out, f)
os.replace(tmp, os.path.join(xdir, f"{me}.json"))
sys.exit(0 if reply["success"] else 1)
