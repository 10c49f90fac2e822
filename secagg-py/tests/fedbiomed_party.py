"""One party of a server-key setup, driven the way Fed-BioMed v4.5.0's code drives the adapter
(written from the contract in ``../shared/reference/fedbiomed-library-api.md``, not copied):

- a node as ``node/secagg.py``'s ``SecaggServkeySetup.setup()``: ``SKManager.get`` (None), then
  ``_setup_specific``: ``write_mpc_certificates_for_experiment`` into its controller's
  directories, ``exec_shamir(party_number, num_parties, ip_file)``, ``open()`` of the returned
  path, ``int()`` of its text, ``SKManager.add``;
- the researcher as ``SecaggServkeyContext._payload()``: ``get`` (None), ``_payload_create``
  (the same steps as party 0, ``int(text.strip())``), then ``get`` again.

Run as ``python fedbiomed_party.py SPEC_JSON``; prints one JSON line: what the party saw."""

from __future__ import annotations

import json
import os
import stat
import sys

from secagg import fedbiomed as fb

spec = json.loads(sys.argv[1])
environ = spec["environ"]
parties, secagg_id, job_id = spec["parties"], spec["secagg_id"], spec["job_id"]
researcher = environ["ID"] == parties[0]

# Module level, as Fed-BioMed builds them at import.
_CManager = fb.CertificateManager(db_path=environ["DB_PATH"])
SKManager = fb.SecaggServkeyManager(environ["DB_PATH"])
mpc = fb.MPCController(
    tmp_dir=environ["TMP_DIR"],
    component_type=fb.RESEARCHER if researcher else fb.NODE,
    component_id=environ["ID"],
)

out = {"get_before": SKManager.get(secagg_id, job_id)}
ip_file, written = _CManager.write_mpc_certificates_for_experiment(
    path_certificates=mpc.mpc_data_dir,
    path_ips=mpc.tmp_dir,
    self_id=environ["ID"],
    self_ip=environ["MPSPDZ_IP"],
    self_port=environ["MPSPDZ_PORT"],
    self_private_key=environ["MPSPDZ_CERTIFICATE_KEY"],
    self_public_key=environ["MPSPDZ_CERTIFICATE_PEM"],
    parties=parties,
)
output = mpc.exec_shamir(
    party_number=0 if researcher else parties.index(environ["ID"]),
    num_parties=len(parties),
    ip_addresses=ip_file,
)
out["output"] = output
out["output_mode"] = stat.S_IMODE(os.stat(output).st_mode)
with open(output, "r") as file:
    text = file.read()
key = int(text.strip()) if researcher else int(text)
context = {"server_key": key}
SKManager.add(secagg_id, parties, context, job_id)
out["output_exists_after_add"] = os.path.exists(output)
out["own_key_copy_exists"] = any(
    p.endswith(".key") and os.path.exists(p) for p in written
)
out["get_after"] = SKManager.get(secagg_id, job_id)
print(json.dumps(out))
