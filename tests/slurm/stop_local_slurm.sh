#!/usr/bin/env bash
# Stop the cluster started by start_local_slurm.sh: cancel the jobs left, then
# stop slurmd, slurmctld, slurmdbd, mariadbd and munged through their pid files
# (never by process name). Running it again, or with nothing up, is harmless.
#   --purge   also delete $PHYSICSML_SLURM_DIR (state, logs, database); job ids
#             then restart at 1 on the next start.
set -uo pipefail

DIR=${PHYSICSML_SLURM_DIR:-/tmp/physicsml-slurm}
export SLURM_CONF=$DIR/etc/slurm.conf

say() { echo "[physicsml-slurm] $*" >&2; }

# is_up PIDFILE COMM: the pid in PIDFILE is a live (not zombie) process named COMM.
is_up() {
  local pid state
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# stop PIDFILE COMM: SIGTERM, then SIGKILL after 10 s; remove the pid file.
stop() {
  if is_up "$1" "$2"; then
    local pid
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do
      is_up "$1" "$2" || break
      sleep 0.2
    done
    if is_up "$1" "$2"; then
      say "$2 ($pid) ignored SIGTERM: SIGKILL"
      kill -9 "$pid" 2>/dev/null
    fi
    say "$2 stopped"
  fi
  rm -f "$1"
}

exec 9>"$DIR.lock"
flock -w 300 9 || say "another start/stop holds $DIR.lock: going on anyway"

if is_up "$DIR/run/slurmctld.pid" slurmctld; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs $jobs"
    # shellcheck disable=SC2086
    scancel $jobs
    for _ in $(seq 50); do
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi

stop "$DIR/run/slurmd.pid" slurmd
stop "$DIR/run/slurmctld.pid" slurmctld
stop "$DIR/run/slurmdbd.pid" slurmdbd
stop "$DIR/db/mariadbd.pid" mariadbd
stop "$DIR/munge/munged.pid" munged

if [ "${1:-}" = --purge ]; then
  # only a directory that start_local_slurm.sh made
  if grep -qs 'start_local_slurm.sh' "$DIR/etc/slurm.conf"; then
    rm -rf "$DIR" "$DIR.lock"
    say "removed $DIR"
  elif [ -e "$DIR" ]; then
    say "not removing $DIR: no slurm.conf written by start_local_slurm.sh in it"
  fi
fi
exit 0
