# Sourced by run.sh: the environment of one component. Usage: . env.sh NAME PORT
# Fed-BioMed v4.5 takes its root directory from where its package sits, so each component gets
# $WORK/NAME/{fedbiomed,envs} as symbolic links to the unmodified tree $FEDBIOMED_V45.
NAME=$1; PORT=$2
R=$WORK/$NAME
mkdir -p "$R"
ln -sfn "$FEDBIOMED_V45/fedbiomed" "$R/fedbiomed"
ln -sfn "$FEDBIOMED_V45/envs" "$R/envs"
export PYTHONPATH=$R:$HERE
export MPSPDZ_IP=127.0.0.1
export MPSPDZ_PORT=$PORT
