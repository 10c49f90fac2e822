#!/bin/bash
# Fed-BioMed v4.5.0's own unit tests, unmodified, as shipped and with secagg's classes installed
# (a conftest.py in a copy of its tests/ calls secagg.fedbiomed.install() first). The tests that
# fail with secagg installed, and why, are listed in the README ("The Fed-BioMed adapter").
# Same FEDBIOMED_V45 and PYTHON as run.sh; logs in $WORK/logs_{tests_orig,tests}/.
set -u
: "${FEDBIOMED_V45:?set FEDBIOMED_V45 to a Fed-BioMed v4.5.0 source tree}"
: "${PYTHON:?set PYTHON to an interpreter with secagg and Fed-BioMed v4.5 dependencies}"
T=${WORK:-$(mktemp -d /tmp/fedbiomed-v45-tests.XXXXXX)}
ln -sfn "$FEDBIOMED_V45/fedbiomed" "$T/fedbiomed"; ln -sfn "$FEDBIOMED_V45/envs" "$T/envs"
rm -rf "$T/tests" "$T/tests_orig"
cp -r "$FEDBIOMED_V45/tests" "$T/tests_orig"; cp -r "$FEDBIOMED_V45/tests" "$T/tests"
cat > "$T/tests/conftest.py" <<'PYEOF'
# secagg drop-in: install secagg's classes before any Fed-BioMed test module imports its target
import secagg.fedbiomed as _s
print("secagg.fedbiomed.install():", _s.install())
PYEOF
TESTS=${TESTS:-"test_certificate_manager.py test_secagg_manager_common.py test_secagg_manager_node.py test_mpc_controller.py test_secagg_crypter.py test_secagg_node.py test_secagg_researcher.py test_secure_aggregation.py test_common_cli.py test_researcher_cli.py test_environ_common.py test_node_environ.py test_researcher_environ.py test_joye_libert.py"}
for mode in tests_orig tests; do
  mkdir -p "$T/logs_$mode"
  for t in $TESTS; do
    (cd "$T/$mode" && PYTHONPATH="$T:$T/$mode" timeout 900 "$PYTHON" -m pytest -q -rA -p no:cacheprovider "$t" > "$T/logs_$mode/$t.log" 2>&1)
    printf "%-10s %-34s %s\n" "$mode" "$t" "$(tail -1 "$T/logs_$mode/$t.log")"
  done
done
echo; echo "failures with secagg installed:"; grep -h "^FAILED" "$T"/logs_tests/*.log
