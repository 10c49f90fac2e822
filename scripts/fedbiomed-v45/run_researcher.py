"""The Fed-BioMed researcher: SecaggServkeyContext(parties, job_id, secagg_id)._payload() (MQTT
bypassed: the Requests singleton is pre-built with an unstarted Messaging), then checks the keys
and aggregates the nodes' ciphertexts with Fed-BioMed's SecaggCrypter signature.
argv: SECAGG_ID JOB_ID EXCHANGE_DIR PARTY_ID..."""
import json, math, os, sys, time

import secagg.fedbiomed as s
print("install:", s.install(), flush=True)

from fedbiomed.researcher.environ import environ
from fedbiomed.common.constants import ComponentType
from fedbiomed.common.messaging import Messaging
from fedbiomed.researcher.requests import Requests
# Requests is a singleton: build it once with a Messaging that is never started (no broker)
Requests(mess=Messaging(lambda *a: None, ComponentType.RESEARCHER, environ["RESEARCHER_ID"],
                        "127.0.0.1", 1))
from fedbiomed.researcher.secagg import SecaggServkeyContext
from fedbiomed.researcher.secagg import _secagg_context as rctx
from fedbiomed.common.secagg import SecaggCrypter

secagg_id, job_id, xdir = sys.argv[1:4]
parties = sys.argv[4:]
assert type(rctx._CManager).__module__ == "secagg.fedbiomed"
assert type(rctx._SKManager).__module__ == "secagg.fedbiomed"

ctx = SecaggServkeyContext(parties=parties, job_id=job_id, secagg_id=secagg_id)
t0 = time.time()
context, status = ctx._payload()
print(f"[researcher] _payload ({time.time()-t0:.1f}s): status={status} "
      f"keys={sorted(context) if context else None}", flush=True)
assert status is True, status
sk0 = context["context"]["server_key"]
assert context["secagg_id"] == secagg_id and context["job_id"] == job_id, context
assert context["parties"] == parties, context["parties"]
again = rctx._SKManager.get(secagg_id, job_id)
assert again == context, (again, context)

# wait for the nodes' results
nodes = parties[1:]
deadline = time.time() + 300
results = {}
while time.time() < deadline and len(results) < len(nodes):
    for n in nodes:
        p = os.path.join(xdir, f"{n}.json")
        if n not in results and os.path.exists(p):
            with open(p) as f:
                results[n] = json.load(f)
    time.sleep(0.5)
assert len(results) == len(nodes), f"missing node results: {set(nodes) - set(results)}"
ok = True
for n in nodes:
    r = results[n]
    print(f"[researcher] node {n}: success={r['reply']['success']} msg={r['reply']['msg']!r} "
          f"files left={r.get('mpc_files_left')}", flush=True)
    ok &= r["reply"]["success"]
assert ok, "a node failed"
total = sk0 + sum(results[n]["sk"] for n in nodes)
print(f"[researcher] sk0 + sum(sk_i) = {total}", flush=True)
assert total == 0

from fedbiomed.researcher.secagg._secagg_context import _BPrimeManager
biprime = _BPrimeManager.get("default_biprime0")["context"]["biprime"]
crypter = SecaggCrypter()
t1 = time.time()
agg = crypter.aggregate(current_round=3, num_nodes=len(nodes),
                        params=[results[n]["enc"] for n in nodes], key=sk0, biprime=biprime,
                        total_sample_size=sum(17 + i for i in range(len(nodes))), clipping_range=None)
val = crypter.aggregate(current_round=3, num_nodes=len(nodes),
                        params=[results[n]["enc_rand"] for n in nodes], key=sk0, biprime=biprime,
                        total_sample_size=1, clipping_range=None)
print(f"[researcher] aggregated in {time.time()-t1:.1f}s", flush=True)
plain = [sum(results[n]["params"][k] for n in nodes) / len(nodes)
         for k in range(len(results[nodes[0]]["params"]))]
assert len(agg) == len(plain), (len(agg), len(plain))
err = max(abs(a - b) for a, b in zip(agg, plain))
print(f"[researcher] {len(agg)} averages, max |secagg - plain| = {err:.2e}; "
      f"secagg_random validation = {val}", flush=True)
assert err < 1e-3, err
assert len(val) == 1 and math.isclose(val[0], 0.4242, abs_tol=0.03), val
print("[researcher] GOAL1 OK", flush=True)
