#!/bin/bash
# Fed-BioMed v4.5.0's own, unmodified, node and researcher secagg code on secagg: 1 researcher +
# N nodes (default 2), each its own process and Fed-BioMed root, after `secagg.fedbiomed.install()`.
#   1. each component's configuration made by Fed-BioMed's environ and `configuration create`;
#   2. every other party registered through Fed-BioMed's `certificate register` CLI;
#   3. nodes run SecaggServkeySetup(...).setup(), the researcher SecaggServkeyContext._payload()
#      (MQTT bypassed); sk0 + sum(sk_i) = 0 is checked, then a Joye-Libert round with
#      Fed-BioMed's SecaggCrypter calls.
# Not in CI: Fed-BioMed 4.5 is not on PyPI. Needs FEDBIOMED_V45 (a v4.5.0 source tree, e.g.
# `git archive v4.5.0 fedbiomed envs tests` of github.com/fedbiomed/fedbiomed) and PYTHON, an
# interpreter with secagg and Fed-BioMed's imports installed (tinydb tabulate cryptography
# pyopenssl validators 'paho-mqtt<2' gmpy2 numpy packaging requests persist-queue msgpack joblib
# scikit-learn pandas torch). Usage: scripts/fedbiomed-v45/run.sh [N]
set -u
N=${1:-2}
: "${FEDBIOMED_V45:?set FEDBIOMED_V45 to a Fed-BioMed v4.5.0 source tree}"
: "${PYTHON:?set PYTHON to an interpreter with secagg and Fed-BioMed v4.5 dependencies}"
export FEDBIOMED_V45
HERE=$(cd "$(dirname "$0")" && pwd); export HERE
D=$HERE
WORK=${WORK:-$(mktemp -d /tmp/fedbiomed-v45.XXXXXX)}; export WORK
RUN=$WORK
PY=$PYTHON
export SECAGG_FEDBIOMED_TIMEOUT=${SECAGG_FEDBIOMED_TIMEOUT:-60}
mkdir -p $RUN/exchange $RUN/logs
NAMES="researcher"; for i in $(seq 1 $N); do NAMES="$NAMES node$i"; done
PORTS=($($PY -c "
import socket
ss=[socket.socket() for _ in range($N+1)]
[s.bind(('127.0.0.1',0)) for s in ss]
print(' '.join(str(s.getsockname()[1]) for s in ss))"))
comp() { [ "$1" = researcher ] && echo researcher || echo node; }
# the CLI module: Fed-BioMed's researcher CLI; for nodes the same CommonCLI wiring (see node_cli.py)
climod() { [ "$1" = researcher ] && echo fedbiomed.researcher.cli || echo node_cli; }

# 1. configs, created by Fed-BioMed's own environ + `configuration create` (CLI, after install())
k=0
for n in $NAMES; do
  ( . $D/env.sh $n ${PORTS[$k]}
    $PY -m secagg.fedbiomed $(climod $n) configuration create > $RUN/logs/$n.create.log 2>&1 \
      || { echo "configuration create failed for $n"; tail -20 $RUN/logs/$n.create.log; exit 1; }
    $PY $D/info.py $(comp $n) 2>>$RUN/logs/$n.info.err | tail -1 > $RUN/$n.info.json ) || exit 1
  k=$((k+1))
done
field() { $PY -c "import json,sys; print(json.load(open('$RUN/$1.info.json'))['$2'])"; }
for n in $NAMES; do echo "$n: id=$(field $n ID) port=$(field $n MPSPDZ_PORT)"; done

# 2. register every other party's certificate through Fed-BioMed's CLI (after install())
k=0
for n in $NAMES; do
  for p in $NAMES; do
    [ $n = $p ] && continue
    ( . $D/env.sh $n ${PORTS[$k]}
      $PY -m secagg.fedbiomed $(climod $n) certificate register \
         -pk $(field $p MPSPDZ_CERTIFICATE_PEM) -pi $(field $p ID) --ip $(field $p MPSPDZ_IP) \
         --port $(field $p MPSPDZ_PORT) >> $RUN/logs/$n.register.log 2>&1 ) \
      || { echo "register $p at $n failed"; tail -20 $RUN/logs/$n.register.log; exit 1; }
  done
  k=$((k+1))
done
( . $D/env.sh researcher ${PORTS[0]}; $PY -m secagg.fedbiomed fedbiomed.researcher.cli certificate list 2>&1 | tail -5 )

# 3. run researcher and nodes at the same time
RID=$(field researcher ID)
PARTIES="$RID"; for i in $(seq 1 $N); do PARTIES="$PARTIES $(field node$i ID)"; done
SID=secagg_$($PY -c "import uuid;print(uuid.uuid4())"); JID=job_$($PY -c "import uuid;print(uuid.uuid4())")
echo "secagg_id=$SID job_id=$JID parties=$PARTIES"
( . $D/env.sh researcher ${PORTS[0]}; exec $PY $D/run_researcher.py $SID $JID $RUN/exchange $PARTIES ) > $RUN/logs/researcher.run.log 2>&1 &
RPID=$!
NPIDS=""
for i in $(seq 1 $N); do
  ( . $D/env.sh node$i ${PORTS[$i]}; exec $PY $D/run_node.py $RID $SID $JID $RUN/exchange $i $PARTIES ) > $RUN/logs/node$i.run.log 2>&1 &
  NPIDS="$NPIDS $!"
done
rc=0
for p in $NPIDS; do wait $p || rc=1; done
wait $RPID || rc=1
for n in $NAMES; do echo "== $n"; grep -v "^$" $RUN/logs/$n.run.log | grep -E "^\[|install|Error|Traceback|assert|File" | tail -15; done
echo "run_all rc=$rc"
exit $rc
