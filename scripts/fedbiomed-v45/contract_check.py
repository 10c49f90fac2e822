"""Behavioural checks of the contracts Fed-BioMed's unit tests meant to check, on real homes
(no mocks). Run in a fresh researcher root (`. env.sh contract PORT`), after run.sh with the same WORK
(uses its researcher/node1 homes); FEDBIOMED_V45 and WORK as for run.sh.
Prints one line per check: OK / DIFF (with expected vs got)."""
import glob, io, json, os, sys, tempfile, contextlib, shutil, traceback

FB = os.environ["FEDBIOMED_V45"]
WORK = os.environ["WORK"]

import fedbiomed.common.certificate_manager as fcm
import fedbiomed.common.secagg as fsec
OrigCM = fcm.CertificateManager          # Fed-BioMed's originals, kept for comparisons
OrigCrypter = fsec.SecaggCrypter
import secagg.fedbiomed as s
s.install()
from fedbiomed.researcher.environ import environ
from fedbiomed.common.certificate_manager import CertificateManager
from fedbiomed.common.secagg_manager import SecaggServkeyManager, SecaggBiprimeManager
from fedbiomed.common.mpc_controller import MPCController
from fedbiomed.common.secagg import SecaggCrypter
from fedbiomed.common.constants import ComponentType
from fedbiomed.common.exceptions import (FedbiomedCertificateError, FedbiomedSecaggError,
                                         FedbiomedSecaggCrypterError, FedbiomedMPCControllerError)

results = []
def check(name, fn, expect):
    """expect: a value, a callable(value)->bool, or an exception class"""
    try:
        got = fn()
    except BaseException as e:  # noqa
        if isinstance(expect, type) and issubclass(expect, BaseException) and isinstance(e, expect):
            results.append(("OK", name, f"raised {type(e).__mro__[1].__name__}/{expect.__name__}"))
        else:
            results.append(("DIFF", name, f"expected {getattr(expect,'__name__',expect)!r}, got {type(e).__name__}: {str(e).splitlines()[0][:160]}"))
        return None
    if isinstance(expect, type) and issubclass(expect, BaseException):
        results.append(("DIFF", name, f"expected {expect.__name__}, got return {got!r:.160}"))
    elif callable(expect):
        results.append(("OK" if expect(got) else "DIFF", name, f"got {got!r:.200}"))
    else:
        results.append(("OK" if got == expect else "DIFF", name, f"expected {expect!r:.100}, got {got!r:.160}"))
    return got

tmp = tempfile.mkdtemp(prefix="fb45_contract_")
# certificates: one from Fed-BioMed's own RSA generator, one from secagg's
os.makedirs(f"{tmp}/rsa"); os.makedirs(f"{tmp}/ec")
rsa_key, rsa_pem = OrigCM.generate_self_signed_ssl_certificate(f"{tmp}/rsa", "c", "node_x")
ec_key, ec_pem = check("CM.generate_self_signed_ssl_certificate returns (key, pem)",
    lambda: CertificateManager.generate_self_signed_ssl_certificate(f"{tmp}/ec", "c", "node_z"),
    lambda r: isinstance(r, tuple) and r[0].endswith("c.key") and r[1].endswith("c.pem") and all(os.path.isfile(p) for p in r))
check("CM.generate in missing folder -> FedbiomedCertificateError",
    lambda: CertificateManager.generate_self_signed_ssl_certificate(f"{tmp}/nope", "c", "x"), FedbiomedCertificateError)
rsa_text = open(rsa_pem).read()

cm = CertificateManager(db_path=environ["DB_PATH"])
check("CM.get(unknown) -> None", lambda: cm.get("node_unknown"), None)
check("CM.list() on fresh home -> []", lambda: cm.list(), [])
d1 = check("CM.insert(RSA cert from Fed-BioMed, NODE) -> int", lambda: cm.insert(rsa_text, "node_x", ComponentType.NODE, "127.0.0.1", 5000), lambda r: type(r) is int)
check("CM.insert duplicate -> FedbiomedCertificateError", lambda: cm.insert(rsa_text, "node_x", ComponentType.NODE, "127.0.0.1", 5000), FedbiomedCertificateError)
check("CM.insert upsert -> [same id]", lambda: cm.insert(rsa_text, "node_x", ComponentType.NODE, "127.0.0.2", 5001, upsert=True), [d1])
check("CM.insert component given as str 'NODE' (Fed-BioMed's register passes .name)", lambda: cm.insert(rsa_text, "node_x", "NODE", "127.0.0.2", 5001, upsert=True), [d1])
check("CM.get(node_x) doc", lambda: cm.get("node_x"),
      lambda d: d == {"certificate": rsa_text, "party_id": "node_x", "ip": "127.0.0.2", "port": 5001, "component": "NODE"})
check("CM.register_certificate(missing file) -> FedbiomedCertificateError",
      lambda: cm.register_certificate("/nonexistent.pem", "node_q", "127.0.0.1", 1), FedbiomedCertificateError)
d2 = check("CM.register_certificate(EC pem, node_z) -> int", lambda: cm.register_certificate(ec_pem, "node_z", "127.0.0.1", 5002), lambda r: type(r) is int and r != d1)
check("CM.register_certificate port as str (Fed-BioMed stores what it gets)", lambda: cm.register_certificate(ec_pem, "node_z", "127.0.0.1", "5003", upsert=True), [d2])
check("CM.list() two docs in order", lambda: [d["party_id"] for d in cm.list()], ["node_x", "node_z"])
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    lv = cm.list(verbose=True)
check("CM.list(verbose) prints table w/o certificate, returns docs with certificate",
      lambda: ("BEGIN CERTIFICATE" not in buf.getvalue() and "node_x" in buf.getvalue() and all("certificate" in d for d in lv)), True)
# write_mpc_certificates_for_experiment
pc = f"{tmp}/pc"; os.makedirs(pc)
args = dict(parties=[environ["ID"], "node_x", "node_z"], path_certificates=pc, path_ips=pc, self_id=environ["ID"],
            self_ip=environ["MPSPDZ_IP"], self_port=environ["MPSPDZ_PORT"],
            self_private_key=environ["MPSPDZ_CERTIFICATE_KEY"], self_public_key=environ["MPSPDZ_CERTIFICATE_PEM"])
check("CM.write_mpc (path not dir) -> FedbiomedCertificateError", lambda: cm.write_mpc_certificates_for_experiment(**{**args, "path_ips": f"{tmp}/nodir"}), FedbiomedCertificateError)
check("CM.write_mpc (unregistered party) -> FedbiomedCertificateError", lambda: cm.write_mpc_certificates_for_experiment(**{**args, "parties": [environ["ID"], "node_x", "node_nope"]}), FedbiomedCertificateError)
check("CM.write_mpc ok -> (ip_file, [P0.key,P0.pem,P1.pem,P2.pem])", lambda: cm.write_mpc_certificates_for_experiment(**args),
      (f"{pc}/ip_addresses", [f"{pc}/P0.key", f"{pc}/P0.pem", f"{pc}/P1.pem", f"{pc}/P2.pem"]))
check("ip_addresses content", lambda: open(f"{pc}/ip_addresses").read(),
      f"{environ['MPSPDZ_IP']}:{environ['MPSPDZ_PORT']}\n127.0.0.2:5001\n127.0.0.1:5003\n")
# compare with Fed-BioMed's own implementation on the same inputs (its TinyDB in a temp file)
ocm = OrigCM(db_path=f"{tmp}/orig_db.json")
ocm.insert(rsa_text, "node_x", "NODE", "127.0.0.2", 5001); ocm.insert(open(ec_pem).read(), "node_z", "NODE", "127.0.0.1", "5003")
pc2 = f"{tmp}/pc2"; os.makedirs(pc2)
o = ocm.write_mpc_certificates_for_experiment(**{**args, "path_certificates": pc2, "path_ips": pc2})
check("CM.write_mpc files identical to Fed-BioMed's", lambda: all(open(f"{pc}/{n}").read() == open(f"{pc2}/{n}").read() for n in os.listdir(pc2)) and sorted(os.listdir(pc)) == sorted(os.listdir(pc2)), True)
check("CM.delete(node_x) -> [id]", lambda: cm.delete("node_x"), [d1])
check("CM.delete(node_x) again -> []", lambda: cm.delete("node_x"), [])
check("CM.insert self id refused (intended)", lambda: cm.insert(rsa_text, environ["ID"], "RESEARCHER", "127.0.0.1", 1), FedbiomedCertificateError)
check("CM.insert garbage cert refused (intended)", lambda: cm.insert("Dummy certificate", "researcher_t", "researcher", "1.1.1.1", 1234), FedbiomedCertificateError)

# MPCController
mtmp = f"{tmp}/mpc"; os.makedirs(mtmp)
mpc = check("MPCController(tmp_dir, NODE, id)", lambda: MPCController(tmp_dir=mtmp, component_type=ComponentType.NODE, component_id="node-1"), lambda m: os.path.isdir(m.mpc_data_dir) and os.path.isdir(m.tmp_dir) and m.mpc_data_dir.startswith(m.tmp_dir))
check("MPC.exec_shamir(num_parties='0') -> FedbiomedMPCControllerError", lambda: MPCController(environ["TMP_DIR"], ComponentType.RESEARCHER, environ["ID"]).exec_shamir(party_number=0, num_parties="0", ip_addresses="x"), FedbiomedMPCControllerError)
check("MPC.exec_shamir(num_parties=2) -> FedbiomedMPCControllerError", lambda: MPCController(environ["TMP_DIR"], ComponentType.RESEARCHER, environ["ID"]).exec_shamir(party_number=0, num_parties=2, ip_addresses="x"), FedbiomedMPCControllerError)
check("MPCController(tmp_dir unwritable file path) -> FedbiomedMPCControllerError", lambda: MPCController(tmp_dir=f"{ec_pem}/sub", component_type=ComponentType.NODE, component_id="n"), FedbiomedMPCControllerError)

# Servkey manager on this fresh home
sk = SecaggServkeyManager(environ["DB_PATH"])
check("SK.get(unknown) -> None", lambda: sk.get("nope", "job"), None)
check("SK.remove(unknown) -> False", lambda: sk.remove("nope", "job"), False)
check("SK.add(unnegotiated key) refused (intended) as FedbiomedSecaggError", lambda: sk.add("s1", [environ["ID"], "a", "b"], {"server_key": 123}, "job"), FedbiomedSecaggError)
# Biprime manager
bp = SecaggBiprimeManager(environ["DB_PATH"])
b0 = check("BP.get(default_biprime0) shape", lambda: bp.get("default_biprime0"),
      lambda e: set(e) == {"secagg_id", "parties", "context"} and e["parties"] is None and set(e["context"]) == {"biprime", "max_keysize"})
orig_b0 = json.load(open(os.path.join(environ["DEFAULT_BIPRIMES_DIR"], "biprime0.json")))
check("BP.get(default_biprime0) value == envs/common/default_biprimes/biprime0.json", lambda: (b0["context"]["biprime"], b0["context"]["max_keysize"]), (orig_b0["biprime"], orig_b0["max_keysize"]))
check("BP.get(unknown) -> None", lambda: bp.get("nope"), None)
check("BP.add dynamic (Fed-BioMed's dummy) -> None", lambda: bp.add("bp1", None, {"biprime": 123456789, "max_keysize": 0}), None)
check("BP.get(bp1)", lambda: bp.get("bp1"), {"secagg_id": "bp1", "parties": None, "context": {"biprime": 123456789, "max_keysize": 0}})
check("BP.add again -> FedbiomedSecaggError", lambda: bp.add("bp1", None, {"biprime": 1, "max_keysize": 0}), FedbiomedSecaggError)
check("BP.remove(bp1) -> True", lambda: bp.remove("bp1"), True)
check("BP.remove(bp1) again -> False", lambda: bp.remove("bp1"), False)
check("BP.remove(default) -> FedbiomedSecaggError", lambda: bp.remove("default_biprime0"), FedbiomedSecaggError)
check("BP.update_default_biprimes(True, Fed-BioMed test-data dir: 12345678) refused (intended)", lambda: bp.update_default_biprimes(True, FB + "/tests/test-data/default_biprimes"), FedbiomedSecaggError)
check("BP.update_default_biprimes(False, dir) -> None", lambda: bp.update_default_biprimes(False, environ["DEFAULT_BIPRIMES_DIR"]), None)
check("BP.get(default_biprime0) after disallow -> None", lambda: bp.get("default_biprime0"), None)
check("BP.update_default_biprimes(True, envs dir) -> None", lambda: bp.update_default_biprimes(True, environ["DEFAULT_BIPRIMES_DIR"]), None)
check("BP.get(default_biprime0) back", lambda: bp.get("default_biprime0"), b0)

# Servkey manager on Goal 1's researcher home (entry made by _payload)
rdb = glob.glob(WORK + "/node1/var/db_*.json") or [p[:-len(".secagg")] + ".json" for p in glob.glob(WORK + "/node1/var/db_*.secagg")]
log = open(WORK + "/logs/researcher.run.log").read()
if rdb:
    import re
    sk_r = SecaggServkeyManager(rdb[0])
    # secagg_id / job_id: from the run's command line isn't logged; find via the node exchange files
    xs = [json.load(open(p)) for p in glob.glob(WORK + "/exchange/node_*.json")]
    ids = re.findall(r"'secagg_id': '([^']+)'", open(glob.glob(WORK + "/logs/node1.run.log")[0]).read())
    sid = ids[0]
    entry = None
    for line in open(WORK + "/logs/node1.run.log"):
        pass
    # job id is not logged by the node; get() with a wrong job must raise, so find it by the error-free call
    check("SK.get(existing, wrong job) -> FedbiomedSecaggError", lambda: sk_r.get(sid, "job_wrong"), FedbiomedSecaggError)
    check("SK.remove(existing, wrong job) -> FedbiomedSecaggError", lambda: sk_r.remove(sid, "job_wrong"), FedbiomedSecaggError)

# SecaggCrypter: errors and bit-compatibility with Fed-BioMed's own
B = 158820908809271716671659880613366104677813341255487834154303909761107215283569995523817428402987962641429395032343305343341950966867458277812575065022203120547706127493272939455658018882112230042773163870472621818892994896895819790062496734944602899772583591514631486212290112369502692304700112819186167541107
c, oc = SecaggCrypter(), OrigCrypter()
check("encrypt(params='not-a-list') -> FedbiomedSecaggCrypterError", lambda: c.encrypt(2, 1, "not-a-list", 10, B), FedbiomedSecaggCrypterError)
check("encrypt(params=[0,1,2] ints) -> FedbiomedSecaggCrypterError", lambda: c.encrypt(2, 1, [0, 1, 2], 10, B), FedbiomedSecaggCrypterError)
check("encrypt(params=['x']) -> FedbiomedSecaggCrypterError", lambda: c.encrypt(2, 1, ["x"], 10, B), FedbiomedSecaggCrypterError)
import random
rng = random.Random(5)
for (nn, rnd, n, cr) in [(2, 1, 4, None), (3, 7, 1000, None), (2, 2, 50, 5), (5, 0, 3, 1)]:
    P = [[rng.uniform(-4, 4) for _ in range(n)] for _ in range(nn)]
    keys = [rng.randrange(-2**2000, 2**2000) for _ in range(nn)]
    ours = [c.encrypt(nn, rnd, p, k, B, cr, 3) for p, k in zip(P, keys)]
    theirs = [oc.encrypt(nn, rnd, p, k, B, cr, 3) for p, k in zip(P, keys)]
    check(f"encrypt bit-identical to Fed-BioMed (nodes={nn} round={rnd} n={n} clip={cr})", lambda: ours == [[int(x) for x in t] for t in theirs], True)
    a1 = c.aggregate(rnd, nn, ours, -sum(keys), B, 10, cr)
    a2 = oc.aggregate(rnd, nn, [[int(x) for x in t] for t in theirs], -sum(keys), B, 10, cr)
    check(f"aggregate == Fed-BioMed's (nodes={nn} n={n} clip={cr})", lambda: (len(a1) == len(a2) and max(abs(x - y) for x, y in zip(a1, a2)) < 1e-9), True)
check("aggregate(num_nodes mismatch) -> FedbiomedSecaggCrypterError", lambda: c.aggregate(2, 2, [[1, 1, 1], [2, 2, 2], [3, 3, 3]], -20, B, 8), FedbiomedSecaggCrypterError)
check("aggregate(non-int) -> FedbiomedSecaggCrypterError", lambda: c.aggregate(2, 2, [["a"], ["b"]], -20, B, 8), FedbiomedSecaggCrypterError)
check("aggregate(['not-int','not-int']) -> FedbiomedSecaggCrypterError", lambda: c.aggregate(2, 2, ["not-int", "not-int"], -20, B, 8), FedbiomedSecaggCrypterError)
check("encrypt(small biprime 1234) refused (intended)", lambda: c.encrypt(2, 1, [1.0], 10, 1234), FedbiomedSecaggCrypterError)
# gmpy2 mpz inputs (Fed-BioMed passes ints; mpz may come from its own code paths)
import gmpy2
check("encrypt(key=mpz) refused, as Fed-BioMed's (isinstance(key, int))", lambda: c.encrypt(2, 1, [1.0], gmpy2.mpz(10), B), FedbiomedSecaggCrypterError)
check("  (Fed-BioMed's own refuses mpz too)", lambda: oc.encrypt(2, 1, [1.0], gmpy2.mpz(10), B), FedbiomedSecaggCrypterError)
check("encrypt(params=numpy float64 list) like Fed-BioMed", lambda: c.encrypt(2, 1, [__import__('numpy').float64(1.5)], 10, B) == [int(x) for x in oc.encrypt(2, 1, [__import__('numpy').float64(1.5)], 10, B)], True)

w = max(len(n) for _, n, _ in results)
for st, n, d in results:
    print(f"{st:4} {n:<{w}}  {d}")
print(f"\n{sum(st=='OK' for st,_,_ in results)} OK, {sum(st=='DIFF' for st,_,_ in results)} DIFF")
shutil.rmtree(tmp, ignore_errors=True)
