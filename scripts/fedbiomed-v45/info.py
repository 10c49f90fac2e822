"""Prints this component's identity as Fed-BioMed's environ sees it (JSON). argv[1]: node|researcher"""
import json, sys
import secagg.fedbiomed as s
s.install()
if sys.argv[1] == "node":
    from fedbiomed.node.environ import environ
else:
    from fedbiomed.researcher.environ import environ
print(json.dumps({k: str(environ[k]) for k in
    ("ID", "ROOT_DIR", "DB_PATH", "TMP_DIR", "MPSPDZ_IP", "MPSPDZ_PORT",
     "MPSPDZ_CERTIFICATE_PEM", "MPSPDZ_CERTIFICATE_KEY", "CONFIG_FILE")}))
