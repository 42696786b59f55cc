#!/usr/bin/env bash
# Start a one-node SLURM cluster on 127.0.0.1 for physicsml's tests and CI, or
# check that it is already up (running it again is cheap and changes nothing).
#
# Needs root and the Debian packages (it installs nothing):
#   apt-get install -y --no-install-recommends \
#       munge slurmctld slurmd slurm-client slurmdbd mariadb-server
# (slurmdbd and mariadb-server only with accounting, the default).
#
# Daemons, all as root, all state under $PHYSICSML_SLURM_DIR:
#   munged -> [mariadbd -> slurmdbd] -> slurmctld -> slurmd
# Accounting (slurmdbd on a private MariaDB) is on by default because submitit
# learns job states from `sacct` only: without it a job ended by scancel, a
# time limit or the OOM killer is never seen as finished.
#
# The node is called `localhost` (not the machine's hostname), so job node lists,
# MASTER_ADDR of torch.distributed and the config do not depend on the machine.
# It advertises the real CPU count (at least 2, so 2-task jobs fit) and memory,
# in the partition `debug`.
#
# Settings (environment):
#   PHYSICSML_SLURM_DIR=/tmp/physicsml-slurm   config, keys, state, logs, pid files
#   PHYSICSML_SLURM_ACCOUNTING=1               0: no slurmdbd/MariaDB (sacct disabled)
#   PHYSICSML_SLURM_CPUS, PHYSICSML_SLURM_MEM_MB   node size (default: detected)
#   PHYSICSML_SLURM_PORT=6817                  slurmctld; slurmd, slurmdbd and
#                                              MariaDB use the next three ports
#
# Clients need SLURM_CONF: `source $PHYSICSML_SLURM_DIR/env.sh`; the script also
# prints that export line on stdout (all other messages go to stderr).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin  # the daemons live in sbin

DIR=${PHYSICSML_SLURM_DIR:-/tmp/physicsml-slurm}
ACCOUNTING=${PHYSICSML_SLURM_ACCOUNTING:-1}
PORT=${PHYSICSML_SLURM_PORT:-6817}
NODE=localhost
CONF=$DIR/etc/slurm.conf
SOCK=$DIR/munge/munge.socket.2
export SLURM_CONF=$CONF
START=$(date +%s%N)

say() { echo "[physicsml-slurm] $*" >&2; }
fail() {
  say "ERROR: $*"
  exit 1
}

# until_ok SECONDS CMD...: retry CMD every 0.2 s for up to SECONDS.
until_ok() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# is_up PIDFILE COMM: the pid in PIDFILE is a live (not zombie) process named COMM.
# PID 1 of a container may reap dead daemons late, so `kill -0` is not enough,
# and checking the name guards against a stale pid file whose pid was reused.
is_up() {
  local pid state
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# stop_pid PIDFILE COMM: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  is_up "$1" "$2" || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    is_up "$1" "$2" || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}

# --- prerequisites ------------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "must run as root (the daemons run as root, SlurmUser=root)"
# one start or stop at a time (several test sessions may start the cluster at once)
mkdir -p "$(dirname "$DIR")"
# (the daemons are started with 9>&-: they must not inherit, and so hold, the lock)
exec 9>"$DIR.lock"
flock -w 300 9 || fail "another start/stop holds $DIR.lock"
need=(munged mungekey slurmctld slurmd sbatch srun sinfo scontrol squeue)
[ "$ACCOUNTING" = 1 ] && need+=(slurmdbd sacct sacctmgr mariadbd mariadb-install-db mariadb-admin)
missing=()
for cmd in "${need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if ((${#missing[@]})); then
  pkgs="munge slurmctld slurmd slurm-client"
  [ "$ACCOUNTING" = 1 ] && pkgs+=" slurmdbd mariadb-server"
  fail "missing commands: ${missing[*]}. Install the packages first:
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs
(or run with PHYSICSML_SLURM_ACCOUNTING=0 to skip slurmdbd/MariaDB)"
fi

# --- node size ----------------------------------------------------------------
hw=$(slurmd -C 2>/dev/null | head -n1)
cpus=${PHYSICSML_SLURM_CPUS:-$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")}
mem=${PHYSICSML_SLURM_MEM_MB:-$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")}
cpus=${cpus:-$(nproc)}
mem=${mem:-1000}
((cpus >= 2)) || cpus=2 # 2 tasks per node must fit (config_overrides allows it)

mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
# munged requires the socket directory to be searchable by everyone
chmod 755 "$DIR" "$DIR/munge"

# --- munge --------------------------------------------------------------------
key=$DIR/munge/munge.key
[ -s "$key" ] || mungekey --create --keyfile="$key"
chown root:root "$key"
chmod 600 "$key"
if ! is_up "$DIR/munge/munged.pid" munged; then
  rm -f "$SOCK" "$SOCK.lock"
  munged --key-file="$key" --socket="$SOCK" --pid-file="$DIR/munge/munged.pid" \
    --seed-file="$DIR/munge/munged.seed" --log-file="$DIR/log/munged.log" 9>&-
  until_ok 10 munge -S "$SOCK" -n || fail "munged did not start, see $DIR/log/munged.log"
  say "munged started"
fi

# --- slurm.conf ---------------------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
  accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
# the slurmdbd connection takes its munge socket from here, not from AuthInfo
AccountingStoragePass=$SOCK"
else
  accounting="AccountingStorageType=accounting_storage/none"
fi
new_conf="# written by tests/slurm/start_local_slurm.sh
ClusterName=physicsml
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire (default 120 s) is also how long a requeued job waits before it may run again
AuthInfo=socket=$SOCK,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
PlugStackConfig=$DIR/etc/plugstack.conf
MailProg=/bin/true
# no cgroups, no systemd: plain process tracking
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
# schedule every 1-2 s (defaults: 30 s backfill, 60 s main loop), so that
# submitted and requeued jobs start at once
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# accept a node description that differs from the detected hardware
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=300
InactiveLimit=0
SlurmdTimeout=300
$accounting
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
conf_changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" >"$CONF"
  conf_changed=1
fi
: >"$DIR/etc/plugstack.conf"
echo "export SLURM_CONF=$CONF" >"$DIR/env.sh"

# --- accounting: MariaDB + slurmdbd ---------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
  db=$DIR/db
  if [ ! -d "$db/data/mysql" ]; then
    say "creating the accounting database (first start only)"
    mkdir -p "$db"
    mariadb-install-db --no-defaults --user=root --datadir="$db/data" --skip-test-db \
      --auth-root-authentication-method=normal >"$DIR/log/mariadb-install.log" 2>&1 ||
      fail "mariadb-install-db failed, see $DIR/log/mariadb-install.log"
  fi
  if ! is_up "$db/mariadbd.pid" mariadbd; then
    rm -f "$db/mariadbd.pid" "$db/mariadbd.sock"
    # mariadbd does not daemonize itself
    setsid mariadbd --no-defaults --user=root --datadir="$db/data" \
      --socket="$db/mariadbd.sock" --pid-file="$db/mariadbd.pid" \
      --bind-address=127.0.0.1 --port=$((PORT + 3)) --skip-name-resolve \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
      --log-error="$DIR/log/mariadb.log" </dev/null >/dev/null 2>&1 9>&- &
    until_ok 60 mariadb-admin --no-defaults -uroot --socket="$db/mariadbd.sock" ping ||
      fail "mariadbd did not start, see $DIR/log/mariadb.log"
    say "mariadbd started"
  fi
  # slurmdbd has no -f option: it reads slurmdbd.conf beside $SLURM_CONF, which
  # must be owned by SlurmUser and not readable by others.
  dbd_conf="AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=root
StorageLoc=slurm_acct_db"
  if [ "$(cat "$DIR/etc/slurmdbd.conf" 2>/dev/null)" != "$dbd_conf" ]; then
    printf '%s\n' "$dbd_conf" >"$DIR/etc/slurmdbd.conf"
    stop_pid "$DIR/run/slurmdbd.pid" slurmdbd
  fi
  chmod 600 "$DIR/etc/slurmdbd.conf"
  if ! is_up "$DIR/run/slurmdbd.pid" slurmdbd; then
    slurmdbd 9>&- || fail "slurmdbd did not start, see $DIR/log/slurmdbd.log"
    until_ok 60 sacctmgr -n list cluster || fail "slurmdbd does not answer, see $DIR/log/slurmdbd.log"
    say "slurmdbd started"
  fi
fi

# --- slurmctld and slurmd -----------------------------------------------------
if [ "$conf_changed" = 1 ]; then
  stop_pid "$DIR/run/slurmd.pid" slurmd
  stop_pid "$DIR/run/slurmctld.pid" slurmctld
fi
if ! is_up "$DIR/run/slurmctld.pid" slurmctld; then
  rm -f "$DIR/run/slurmctld.pid"
  slurmctld -f "$CONF" 9>&- || fail "slurmctld did not start, see $DIR/log/slurmctld.log"
  until_ok 30 scontrol ping || fail "slurmctld does not answer, see $DIR/log/slurmctld.log"
  say "slurmctld started"
fi
if ! is_up "$DIR/run/slurmd.pid" slurmd; then
  rm -f "$DIR/run/slurmd.pid"
  slurmd -f "$CONF" -N "$NODE" 9>&- || fail "slurmd did not start, see $DIR/log/slurmd.log"
  say "slurmd started"
fi

# node_up: the node takes jobs; one left down or drained by an earlier run is resumed.
node_up() {
  local state
  state=$(sinfo -h -N -n "$NODE" -o %T) || return 1
  case $state in
  idle | mixed | allocated | completing) return 0 ;;
  *down* | *drain* | *fail*) scontrol update NodeName="$NODE" State=RESUME ;;
  esac
  return 1
}
until_ok 60 node_up || {
  sinfo -N -l >&2 || true
  fail "node $NODE is not up, see $DIR/log/slurmd.log and $DIR/log/slurmctld.log"
}

say "cluster up in $((($(date +%s%N) - START) / 1000000)) ms ($cpus CPUs, $mem MB, accounting=$ACCOUNTING)"
sinfo >&2
echo "export SLURM_CONF=$CONF"
