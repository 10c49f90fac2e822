"""Fed-BioMed v4.5.0's node CLI certificate/configuration part, wired exactly as
fedbiomed/node/cli.py:launch_cli() does (CommonCLI + node environ). fedbiomed.node.cli itself
cannot be imported here: it pulls fedbiomed.node.node -> dataset_manager -> FLamby, which is
git-only (not on PyPI). Run as: python -m secagg.fedbiomed node_cli ARGS..."""
from fedbiomed.common.cli import CommonCLI
from fedbiomed.node.environ import environ

cli = CommonCLI()
cli.set_environ(environ=environ)
cli.initialize_certificate_parser()
cli.initialize_create_configuration()
cli.parse_args()
