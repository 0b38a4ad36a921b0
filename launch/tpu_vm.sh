#!/usr/bin/env bash
# Run mirrorgan_jax on a Cloud TPU VM slice (single- or multi-host) with gcloud.
#
#   PROJECT=my-proj BUCKET=gs://my-bucket launch/tpu_vm.sh [--dry-run] <subcommand> [main flags...]
#
# Every setting is an environment variable; `launch/tpu_vm.sh help` lists them and launch/README.md
# has complete recipes for v4-8 and v4-32. With --dry-run (or DRY_RUN=1) the commands are printed,
# one per line and shell-quoted, and nothing runs.
# Remote command text is built in single quotes on purpose (it expands on the workers):
# shellcheck disable=SC2016
set -euo pipefail

SCRIPT_NAME=${0##*/}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JAX_TPU_FIND_LINKS=https://storage.googleapis.com/jax-releases/libtpu_releases.html
SUBCOMMANDS="create setup check prepare train eval sample run ssh logs stop delete help"
MAIN_MODES="all prepare describe import_torch pretrain_damsm pretrain_stream train eval sample"

die() {
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 2
}

info() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }

usage() {
  cat <<EOF
Usage: launch/$SCRIPT_NAME [--dry-run] <subcommand> [extra flags for mirrorgan_jax.main...]

--dry-run (or DRY_RUN=1) prints every command, one per line and shell-quoted, and runs nothing.

Subcommands
  create            create the TPU VM slice (gcloud compute tpus tpu-vm create)
  setup             copy this checkout (or clone REPO_URL) to every worker, create a Python 3.11
                    venv there, install requirements-lock.txt, jax[tpu] and the package
  check             on every worker: jax.distributed.initialize(), then print process index,
                    process count and local/global device counts (the slice is healthy when
                    every worker reports the same global count)
  prepare           --mode=prepare on worker 0 only: builds the tfds shards once into DATA_DIR
  train|eval|sample --mode=<same> on every worker (--worker=all), detached under nohup
  run <mode>        any other main mode on every worker (all, pretrain_damsm, pretrain_stream, ...)
  ssh               interactive ssh to worker \${WORKER:-0}
  logs [job]        tail ~/\$REMOTE_DIR/logs/<job>.log (default train) on worker \${WORKER:-0}
  stop              stop the jobs this script started, on every worker
  delete            delete the TPU VM slice (--quiet)
  help              this text

Settings (environment variables)
  PROJECT           Google Cloud project (required by every subcommand but help)
  ZONE              zone; default us-central2-b for v4, required for other families
  ACCELERATOR_TYPE  v4-8 (default), v4-32, v4-128, v5litepod-8, v5litepod-16, v5p-8, v6e-8, ...
  TPU_NAME          default mirrorgan-<accelerator type>
  RUNTIME_VERSION   TPU VM image; default by family: v2/v3/v4 tpu-ubuntu2204-base,
                    v5litepod v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
  SPOT=1 | PREEMPTIBLE=1 | RESERVED=1
                    create a Spot, preemptible or reserved slice (at most one of them)
  CREATE_ARGS       more flags for 'tpu-vm create' (split on spaces), e.g. --network=my-net
  BUCKET            gs://bucket[/prefix] (required by prepare/train/eval/sample/run)
  CONFIG            config file, optionally with :arg (default configs/cub.py)
  WORKDIR           default \$BUCKET/runs/<config name>
  DATA_DIR          prepared tfds shards; default \$BUCKET/data
  MANUAL_DIR        raw data set for prepare; default \$BUCKET/raw/<dataset> (unused by shapes)
  STAGE_MANUAL      1 (default): copy a gs:// MANUAL_DIR to worker 0's disk before prepare
  STAGE_DATA=1      copy a gs:// DATA_DIR to every worker's disk before train/eval/sample/run
                    and read the local copy (default 0: read DATA_DIR directly)
  EXTRA_ARGS        extra flags for mirrorgan_jax.main, read by the remote shell
                    (flags after the subcommand are passed too, quoted one by one)
  REPO_URL, REPO_REF
                    setup clones this git URL (branch/tag REPO_REF) instead of copying the checkout
  REMOTE_DIR        checkout folder in each worker's home (default mirrorgan_jax)
  PYTHON            interpreter for the venv on the workers (default python3.11)
  JAX_VERSION       jax[tpu] version (default: the jax pin in requirements-lock.txt)
  FOREGROUND=1      run the job attached (output streamed) instead of detached under nohup
  WORKER            worker index for ssh/logs (default 0); TAIL_LINES, FOLLOW=1 for logs
  DRY_RUN=1         same as --dry-run
EOF
}

# Quote one word so that a POSIX shell reads it back unchanged.
shquote() {
  local s=$1 q="'\\''"
  if [[ -n $s && $s =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
    return
  fi
  s=${s//"'"/"$q"}
  printf "'%s'" "$s"
}

# Quote every argument and join them with spaces.
shjoin() {
  local out="" arg
  for arg in "$@"; do
    out+="${out:+ }$(shquote "$arg")"
  done
  printf '%s' "$out"
}

# Print (dry run) or execute a command.
run_cmd() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%s\n' "$(shjoin "$@")"
  else
    "$@"
  fi
}

is_bool() { [[ $1 == 0 || $1 == 1 ]]; }

require() {
  local name=$1 why=$2
  [[ -n ${!name:-} ]] || die "$name is not set; $why"
}

# ---- accelerator type -> family, chips, JAX devices, hosts, default runtime --------------------
parse_accelerator() {
  local accel=$ACCELERATOR_TYPE n
  [[ $accel =~ ^(v2|v3|v4|v5p|v5litepod|v6e)-([0-9]+)$ ]] ||
    die "ACCELERATOR_TYPE='$accel' is not understood; expected <family>-<N> with family one of" \
      "v2, v3, v4, v5p, v5litepod, v6e (e.g. v4-8, v4-32, v5litepod-16)"
  ACCEL_FAMILY=${BASH_REMATCH[1]}
  n=$((10#${BASH_REMATCH[2]}))
  ((n > 0)) || die "ACCELERATOR_TYPE='$accel': the size must be positive"
  case $ACCEL_FAMILY in
    v2 | v3)
      # N counts TensorCores; JAX sees one device per core; 8 cores per host.
      CHIPS=$((n / 2)) DEVICES=$n HOSTS=$(((n + 7) / 8))
      DEFAULT_RUNTIME=tpu-ubuntu2204-base
      ;;
    v4 | v5p)
      # N counts TensorCores: 2 per chip, fused into one JAX device (megacore); 4 chips per host.
      ((n % 8 == 0)) || die "ACCELERATOR_TYPE='$accel': $ACCEL_FAMILY sizes are multiples of 8"
      CHIPS=$((n / 2)) DEVICES=$((n / 2)) HOSTS=$((n / 8))
      if [[ $ACCEL_FAMILY == v4 ]]; then DEFAULT_RUNTIME=tpu-ubuntu2204-base; else
        DEFAULT_RUNTIME=v2-alpha-tpuv5; fi
      ;;
    v5litepod | v6e)
      # N counts chips (one TensorCore each); Google's tables count 8 chips per host.
      CHIPS=$n DEVICES=$n HOSTS=$(((n + 7) / 8))
      if [[ $ACCEL_FAMILY == v5litepod ]]; then DEFAULT_RUNTIME=v2-alpha-tpuv5-lite; else
        DEFAULT_RUNTIME=v2-alpha-tpuv6e; fi
      ;;
  esac
}

accelerator_summary() {
  local kind="single-host"
  ((HOSTS > 1)) && kind="multi-host: every worker runs the same command"
  printf '%s: %s chips, %s JAX devices, %s host(s) (%s)' \
    "$ACCELERATOR_TYPE" "$CHIPS" "$DEVICES" "$HOSTS" "$kind"
}

# ---- settings ---------------------------------------------------------------------------------
load_settings() {
  DRY_RUN=${DRY_RUN:-0}
  is_bool "$DRY_RUN" || die "DRY_RUN='$DRY_RUN' must be 0 or 1"
  ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
  parse_accelerator
  RUNTIME_VERSION=${RUNTIME_VERSION:-$DEFAULT_RUNTIME}
  if [[ -z ${ZONE:-} && $ACCEL_FAMILY == v4 ]]; then ZONE=us-central2-b; fi
  ZONE=${ZONE:-}
  TPU_NAME=${TPU_NAME:-mirrorgan-$ACCELERATOR_TYPE}
  [[ $TPU_NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
    die "TPU_NAME='$TPU_NAME' must be lowercase letters, digits and hyphens, starting with a letter"
  SPOT=${SPOT:-0} PREEMPTIBLE=${PREEMPTIBLE:-0} RESERVED=${RESERVED:-0}
  local flag
  STAGE_MANUAL=${STAGE_MANUAL:-1}
  for flag in SPOT PREEMPTIBLE RESERVED STAGE_MANUAL STAGE_DATA FOREGROUND FOLLOW; do
    printf -v "$flag" '%s' "${!flag:-0}"
    is_bool "${!flag}" || die "$flag='${!flag}' must be 0 or 1"
  done
  ((SPOT + PREEMPTIBLE + RESERVED <= 1)) || die "set at most one of SPOT, PREEMPTIBLE, RESERVED"
  REMOTE_DIR=${REMOTE_DIR:-mirrorgan_jax}
  [[ $REMOTE_DIR =~ ^[A-Za-z0-9_.][A-Za-z0-9_./-]*$ && $REMOTE_DIR != *..* ]] ||
    die "REMOTE_DIR='$REMOTE_DIR' must be a plain path relative to the workers' home"
  PYTHON=${PYTHON:-python3.11}
  [[ $PYTHON =~ ^[A-Za-z0-9_./-]+$ ]] || die "PYTHON='$PYTHON' must be a plain command name"
  WORKER=${WORKER:-0}
  TAIL_LINES=${TAIL_LINES:-100}
  [[ $TAIL_LINES =~ ^[0-9]+$ ]] || die "TAIL_LINES='$TAIL_LINES' must be a number"
  EXTRA_ARGS=${EXTRA_ARGS:-}
  CREATE_ARGS=${CREATE_ARGS:-}
  REPO_URL=${REPO_URL:-} REPO_REF=${REPO_REF:-}
  CONFIG=${CONFIG:-configs/cub.py}
  local config_file=${CONFIG%%:*} config_arg=""
  [[ $CONFIG == *:* ]] && config_arg=${CONFIG#*:}
  [[ $config_file == *.py ]] || die "CONFIG='$CONFIG' must name a .py config file (optionally :arg)"
  if [[ -z $REPO_URL && ! -f $REPO_ROOT/$config_file ]]; then
    die "CONFIG='$CONFIG': $config_file does not exist in $REPO_ROOT (paths are repo-relative)"
  fi
  DATASET=$(basename "$config_file" .py)
  RUN_NAME=$DATASET${config_arg:+-$config_arg}
  RUN_NAME=${RUN_NAME//[^A-Za-z0-9_.-]/-}
}

require_gcloud_settings() {
  require PROJECT "the Google Cloud project every gcloud command runs in (export PROJECT=...)"
  require ZONE "no default zone for ACCELERATOR_TYPE=$ACCELERATOR_TYPE; pick one that offers it"
}

# BUCKET and the gs:// paths derived from it (needed by every job subcommand).
require_storage_settings() {
  require BUCKET "prepare/train/eval/sample keep the data and the run directory on gs:// (export BUCKET=gs://...)"
  BUCKET=${BUCKET%/}
  [[ $BUCKET =~ ^gs://[a-z0-9][-a-z0-9_.]*[a-z0-9](/.*)?$ ]] ||
    die "BUCKET='$BUCKET' must look like gs://bucket-name[/prefix]"
  WORKDIR=${WORKDIR:-$BUCKET/runs/$RUN_NAME}
  DATA_DIR=${DATA_DIR:-$BUCKET/data}
  MANUAL_DIR=${MANUAL_DIR:-$BUCKET/raw/$DATASET}
  local name
  if ((HOSTS > 1)); then
    for name in WORKDIR DATA_DIR; do
      [[ ${!name} == gs://* ]] ||
        die "$name='${!name}' must be on gs:// for a multi-host slice (every host reads and writes it)"
    done
  fi
}

header() {
  local line
  line="$1 on TPU '$TPU_NAME' in ${ZONE:-<no zone>}, project ${PROJECT:-<unset>}; $(accelerator_summary); runtime $RUNTIME_VERSION"
  if [[ $DRY_RUN == 1 ]]; then printf '# %s\n' "$line"; else info "$line"; fi
}

# ---- gcloud wrappers --------------------------------------------------------------------------
tpu_gcloud() {
  run_cmd gcloud compute tpus tpu-vm "$@" --zone="$ZONE" --project="$PROJECT"
}

ssh_workers() {
  local workers=$1 command=$2
  tpu_gcloud ssh "$TPU_NAME" --worker="$workers" --command="$command"
}

# ---- remote command builders ------------------------------------------------------------------
jax_version() {
  if [[ -n ${JAX_VERSION:-} ]]; then
    printf '%s' "$JAX_VERSION"
    return
  fi
  local lock=$REPO_ROOT/requirements-lock.txt version
  [[ -f $lock ]] || die "$lock not found; set JAX_VERSION"
  version=$(sed -n -E 's/^jax(\[[A-Za-z0-9_,]+\])?==([^ ;#]+).*/\2/p' "$lock" | head -n 1)
  [[ -n $version ]] || die "no 'jax==' or 'jax[...]==' pin in $lock; set JAX_VERSION"
  printf '%s' "$version"
}

# Script run on every worker by setup: fresh sources (keeping .venv and logs), venv, installs.
setup_script() {
  local jaxv=$1 dir="\$HOME/$REMOTE_DIR" src
  local clean="find $dir -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs -exec rm -rf {} +"
  if [[ -n $REPO_URL ]]; then
    src="rm -rf $dir.src && git clone --depth 1"
    [[ -n $REPO_REF ]] && src+=" --branch $(shquote "$REPO_REF")"
    src+=" $(shquote "$REPO_URL") $dir.src && mkdir -p $dir && $clean && cp -a $dir.src/. $dir/"
    src+=" && rm -rf $dir.src"
  else
    src="mkdir -p $dir && $clean && tar -xzf $dir.tar.gz -C $dir"
    src+=" && rm -f $dir.tar.gz"
  fi
  local apt="sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600"
  local py="command -v $PYTHON >/dev/null 2>&1 || { $apt update -qq"
  py+=" && $apt install -y -qq $PYTHON $PYTHON-venv; }"
  local pip=".venv/bin/pip install -q"
  printf '%s' "set -e; $src; cd $dir; $py; test -x .venv/bin/python || $PYTHON -m venv .venv;" \
    " $pip --upgrade pip; $pip -r requirements-lock.txt;" \
    " $pip $(shquote "jax[tpu]==$jaxv") -f $JAX_TPU_FIND_LINKS; $pip --no-deps -e .;" \
    " .venv/bin/python -c 'import jax, flax; print(\"mirrorgan_jax: jax\", jax.__version__," \
    " \"flax\", flax.__version__)'"
}

# Command that starts job <name> (its shell script <script>) on a worker, detached by default.
# The job gets its own process group (setsid) so that `stop` ends it and everything it started.
job_command() {
  local name=$1 script=$2 dir="\$HOME/$REMOTE_DIR"
  local log="logs/$name.log" pidf="logs/$name.pid"
  local guard='for f in logs/*.pid; do [ -e "$f" ] || continue; p=$(cat "$f");'
  guard+=' if kill -0 "$p" 2>/dev/null; then echo "mirrorgan_jax: $(hostname) already runs'
  guard+=' job $(basename "$f" .pid) (pid $p); run stop first" >&2; exit 1; fi; done'
  if [[ $FOREGROUND == 1 ]]; then
    printf '%s' "cd $dir && mkdir -p logs && $guard && bash -c $(shquote "$script") 2>&1 | tee -a $log"
  else
    printf '%s' "cd $dir && mkdir -p logs && $guard && { setsid nohup bash -c $(shquote "$script")" \
      " >> $log 2>&1 < /dev/null & echo \$! > $pidf; } && echo \"mirrorgan_jax: started $name on" \
      " \$(hostname) (pid \$(cat $pidf)); log \$HOME/$REMOTE_DIR/$log\""
  fi
}

# The `python -m mirrorgan_jax.main ...` line for one mode, with user flags appended.
main_line() {
  local mode=$1
  shift
  local line data_flag=${DATA_FLAG:-}
  [[ -n $data_flag ]] || data_flag=$(shquote "--config.data.data_dir=$DATA_DIR")
  line="exec env TF_CPP_MIN_LOG_LEVEL=2 ${JOB_ENV:-}.venv/bin/python -m mirrorgan_jax.main"
  line+=" $(shjoin --config="$CONFIG" --workdir="$WORKDIR" --mode="$mode") $data_flag"
  # already shell text (it may hold "$HOME/..." for the worker's shell to expand)
  [[ -n ${MANUAL_FLAG:-} ]] && line+=" $MANUAL_FLAG"
  [[ -n $EXTRA_ARGS ]] && line+=" $EXTRA_ARGS"
  (($# > 0)) && line+=" $(shjoin "$@")"
  printf '%s' "$line"
}

# ---- subcommands ------------------------------------------------------------------------------
cmd_create() {
  local -a flags=(--accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  [[ $SPOT == 1 ]] && flags+=(--spot)
  [[ $PREEMPTIBLE == 1 ]] && flags+=(--preemptible)
  [[ $RESERVED == 1 ]] && flags+=(--reserved)
  local -a extra=()
  [[ -n $CREATE_ARGS ]] && read -r -a extra <<<"$CREATE_ARGS"
  # ${extra[@]+...}: an empty array is an unbound variable under set -u in bash < 4.4
  tpu_gcloud create "$TPU_NAME" "${flags[@]}" ${extra[@]+"${extra[@]}"}
}

cmd_setup() {
  local jaxv
  jaxv=$(jax_version)
  if [[ -z $REPO_URL ]]; then
    SETUP_TARBALL=${TMPDIR:-/tmp}/${REMOTE_DIR//\//-}-src-$$.tar.gz
    [[ $DRY_RUN == 1 ]] || trap 'rm -f "$SETUP_TARBALL"' EXIT
    local -a tar_cmd=(tar -C "$REPO_ROOT" --exclude=.venv --exclude=.git --exclude=runs
      --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' --exclude=.pytest_cache
      --exclude=.ruff_cache -czf "$SETUP_TARBALL" .)
    if [[ $DRY_RUN == 1 ]]; then
      run_cmd "${tar_cmd[@]}"
    else
      # GNU tar exits 1 when a file changed while it was read (an editor saving): keep going
      local rc=0
      "${tar_cmd[@]}" || rc=$?
      if ((rc == 1)) && [[ -s $SETUP_TARBALL ]]; then
        info "warning: tar reported files that changed while being archived; check the copy"
      elif ((rc != 0)); then
        die "could not archive $REPO_ROOT (tar exit status $rc)"
      fi
    fi
    tpu_gcloud scp "$SETUP_TARBALL" "$TPU_NAME:$REMOTE_DIR.tar.gz" --worker=all
  fi
  ssh_workers all "$(setup_script "$jaxv")"
}

cmd_prepare() {
  local script="" staged
  MANUAL_FLAG=""
  JOB_ENV="JAX_PLATFORMS=cpu "  # prepare never needs the TPU; don't claim it on worker 0
  if [[ $DATASET != shapes ]]; then
    MANUAL_FLAG=$(shquote "--config.data.manual_dir=$MANUAL_DIR")
    if [[ $MANUAL_DIR == gs://* && $STAGE_MANUAL == 1 ]]; then
      staged="\"\$HOME/mirrorgan_raw/$DATASET\""
      script="mkdir -p $staged && gcloud storage rsync --recursive $(shquote "$MANUAL_DIR") $staged && "
      MANUAL_FLAG="--config.data.manual_dir=$staged"
    fi
  fi
  script+=$(main_line prepare "$@")
  ssh_workers 0 "$(job_command prepare "$script")"
}

cmd_job() {
  local mode=$1 script="" staged
  shift
  DATA_FLAG=""
  # Multi-host slices: every worker joins one JAX program (jax.distributed.initialize() with
  # the TPU metadata, asked for explicitly because gcloud TPU VMs set no launcher variable).
  ((HOSTS > 1)) && JOB_ENV="MIRRORGAN_DISTRIBUTED=1 "
  if [[ $STAGE_DATA == 1 && $DATA_DIR == gs://* ]]; then
    staged="\"\$HOME/mirrorgan_data\""
    script="mkdir -p $staged && gcloud storage rsync --recursive $(shquote "$DATA_DIR") $staged && "
    DATA_FLAG="--config.data.data_dir=$staged"
  fi
  script+=$(main_line "$mode" "$@")
  ssh_workers all "$(job_command "$mode" "$script")"
}

cmd_logs() {
  local job=${1:-train} tail_flags=""
  [[ $job =~ ^[a-z_]+$ ]] || die "logs: job name '$job' must be a mode name such as train"
  [[ $FOLLOW == 1 ]] && tail_flags=" -F"
  ssh_workers "$WORKER" "tail -n $TAIL_LINES$tail_flags \$HOME/$REMOTE_DIR/logs/$job.log"
}

cmd_check() {
  local py='import jax; jax.distributed.initialize(); print("mirrorgan_jax check:",'
  py+=' "process", jax.process_index(), "of", jax.process_count(), "|",'
  py+=' jax.local_device_count(), "local /", jax.device_count(), "global devices")'
  ssh_workers all "cd \$HOME/$REMOTE_DIR && .venv/bin/python -c $(shquote "$py")"
}

cmd_stop() {
  local script='for f in $HOME/'"$REMOTE_DIR"'/logs/*.pid; do [ -e "$f" ] || continue; p=$(cat "$f");'
  script+=' if kill -0 "$p" 2>/dev/null; then { kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p"; } && echo "mirrorgan_jax:'
  script+=' stopped $(basename "$f" .pid) (pid $p) on $(hostname)"; fi; rm -f "$f"; done'
  ssh_workers all "$script"
}

main() {
  # --dry-run is ours wherever it appears (mirrorgan_jax.main has no such flag), so that a
  # misplaced one can never start a real run.
  local -a rest=()
  local arg
  for arg in "$@"; do
    if [[ $arg == --dry-run ]]; then DRY_RUN=1; else rest+=("$arg"); fi
  done
  set -- ${rest[@]+"${rest[@]}"}
  local sub=${1:-}
  [[ $sub == -h || $sub == --help ]] && sub=help
  if [[ -z $sub ]]; then
    usage >&2
    exit 2
  fi
  shift
  case " $SUBCOMMANDS " in
    *" $sub "*) ;;
    *)
      usage >&2
      die "unknown subcommand '$sub' (expected one of: $SUBCOMMANDS)"
      ;;
  esac
  if [[ $sub == help ]]; then
    usage
    if (load_settings) 2>/dev/null; then
      load_settings
      printf '\nCurrent slice: %s, runtime %s\n' "$(accelerator_summary)" "$RUNTIME_VERSION"
    fi
    return 0
  fi
  load_settings
  require_gcloud_settings
  case $sub in
    create | delete | ssh | logs | stop | setup | check) ;;
    *) require_storage_settings ;;
  esac
  case $sub in
    ssh | logs) [[ $WORKER =~ ^[0-9]+$ ]] || die "WORKER='$WORKER' must be a worker index (0, 1, ...)" ;;
  esac
  case $sub in
    create | delete | ssh | stop | setup | check)
      (($# == 0)) || die "$sub takes no arguments (got: $*)"
      ;;
    logs) (($# <= 1)) || die "logs takes at most one job name (got: $*)" ;;
  esac
  header "$sub"
  case $sub in
    create) cmd_create ;;
    setup) cmd_setup ;;
    check) cmd_check ;;
    prepare) cmd_prepare "$@" ;;
    train | eval | sample) cmd_job "$sub" "$@" ;;
    run)
      local mode=${1:-}
      [[ -n $mode ]] || die "run needs a mode: one of $MAIN_MODES"
      shift
      case " $MAIN_MODES " in *" $mode "*) ;; *) die "run: unknown mode '$mode' (one of: $MAIN_MODES)" ;; esac
      [[ $mode != prepare ]] || die "use the prepare subcommand (it runs on worker 0 only)"
      if [[ $mode == all ]] && ((HOSTS > 1)); then
        die "--mode=all would run prepare on all $HOSTS hosts at once; on a multi-host slice run" \
          "'prepare' (worker 0), then 'run pretrain_damsm', 'run pretrain_stream', 'train', 'eval'"
      fi
      cmd_job "$mode" "$@"
      ;;
    ssh) tpu_gcloud ssh "$TPU_NAME" --worker="$WORKER" ;;
    logs) cmd_logs "$@" ;;
    stop) cmd_stop ;;
    delete) tpu_gcloud delete "$TPU_NAME" --quiet ;;
  esac
}

main "$@"
