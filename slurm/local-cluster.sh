#!/usr/bin/env bash
# A real 2-node SLURM 22.05 cluster with fake GPUs on this one machine, for tests and CI.
#
#   slurm/local-cluster.sh start    install (apt) if needed, configure, start the daemons; idempotent
#   slurm/local-cluster.sh stop     stop only the daemons this script started
#   slurm/local-cluster.sh status   sinfo
#
# Needs root and apt (Debian 12 packages slurmctld, slurmd, slurm-client, munge, slurmdbd,
# mariadb-server). There is no systemd here, so each daemon is started by hand and its pid is kept
# in $STATE_DIR; `stop` signals exactly those. Two slurmd processes (-N n1 / -N n2) listening on
# different ports make two nodes; /dev/prismlab-fakegpu* character devices stand in for GPUs, so
# SLURM's gres plugin sets CUDA_VISIBLE_DEVICES as on a real GPU node.
set -euo pipefail

STATE_DIR=${PRISMLAB_SLURM_STATE:-/run/prismlab-slurm}
CONF_DIR=/etc/slurm
CLUSTER=prismlab
NODES=(n1 n2)
GPUS_PER_NODE=2
CPUS_PER_NODE=${PRISMLAB_SLURM_CPUS:-$(nproc)}
MEM_PER_NODE_MB=${PRISMLAB_SLURM_MEM_MB:-8000}
SLURMD_PORT0=17001
CTLD_PORT=6817
DBD_PORT=6819
GRACE_TIME_S=${PRISMLAB_SLURM_GRACE_S:-60}

log() { echo "local-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"
}

install_packages() {
  local missing=()
  for bin in slurmctld slurmd sinfo munged slurmdbd mariadbd; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
  done
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing slurm, munge, mariadb (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
}

running() {  # running NAME: the daemon we started under NAME is alive
  local pidfile="$STATE_DIR/$1.pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$((limit * 5))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not come up within ${limit}s (logs in $STATE_DIR)"
}

start_munge() {
  if running munged; then
    [ -S /run/munge/munge.socket.2 ] && return
    kill "$(cat "$STATE_DIR/munged.pid")"  # alive but its socket is gone: start afresh
    sleep 1
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  [ -f /etc/munge/munge.key ] || runuser -u munge -- /usr/sbin/mungekey --create
  runuser -u munge -- /usr/sbin/munged --force
  wait_for 10 munged test -S /run/munge/munge.socket.2
  cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
}

start_mariadb() {
  running mariadbd && return
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mariadbd.pid \
    >"$STATE_DIR/mariadbd.log" 2>&1 &
  echo $! > "$STATE_DIR/mariadbd.pid"
  wait_for 30 mariadb mysqladmin ping
  mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'prismlab';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
}

write_config() {
  mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/log/slurm
  local last_port=$((SLURMD_PORT0 + ${#NODES[@]} - 1))
  cat > "$CONF_DIR/slurm.conf" <<CONF
# Written by prismlab slurm/local-cluster.sh: a 2-node test cluster on one machine.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=root
AuthType=auth/munge
# Short credential life and a fast scheduler loop make requeue take seconds, not minutes.
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd-%n.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
# Nodes register with the sizes written here, whatever this machine has.
SlurmdParameters=config_overrides
# Jobs are not requeueable unless they ask (--requeue), as on many sites: prismlab's scripts must ask.
JobRequeue=0
KillWait=10
# Preemption as sites configure it: a job on a higher PriorityTier partition takes the CPUs of a
# job on a lower one, which gets SIGCONT + SIGTERM, GraceTime seconds, then SIGKILL and a requeue.
# No preempt_send_user_signal: the job's --signal is not sent at preemption (the common default).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
MinJobAge=300
GresTypes=gpu
SelectType=select/cons_tres
# CR_Core: a job takes cores, not a whole node's memory.
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageTRES=gres/gpu
NodeName=n[1-${#NODES[@]}] NodeAddr=127.0.0.1 Port=[$SLURMD_PORT0-$last_port] CPUs=$CPUS_PER_NODE RealMemory=$MEM_PER_NODE_MB Gres=gpu:$GPUS_PER_NODE State=UNKNOWN
PartitionName=gpu Nodes=n[1-${#NODES[@]}] Default=YES MaxTime=02:00:00 State=UP
PartitionName=debug Nodes=n1 MaxTime=00:10:00 State=UP
PartitionName=low Nodes=n[1-${#NODES[@]}] MaxTime=02:00:00 PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_TIME_S State=UP
PartitionName=high Nodes=n[1-${#NODES[@]}] MaxTime=02:00:00 PriorityTier=10 PreemptMode=OFF State=UP
CONF
  : > "$CONF_DIR/gres.conf"
  local i=0
  for node in "${NODES[@]}"; do
    local files=()
    for g in $(seq 0 $((GPUS_PER_NODE - 1))); do
      local dev="/dev/prismlab-fakegpu$i"
      # Character devices gres can stat; 1,3 is /dev/null's major/minor, harmless to open.
      [ -e "$dev" ] || mknod "$dev" c 1 3
      files+=("$dev")
      i=$((i + 1))
    done
    echo "NodeName=$node Name=gpu File=$(IFS=,; echo "${files[*]}")" >> "$CONF_DIR/gres.conf"
  done
  cat > "$CONF_DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE_DIR/slurmdbd.pid
LogFile=$STATE_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StorageUser=slurm
StoragePass=prismlab
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
  grep -qE '^127\.0\.0\.1[[:space:]].*\bn1\b' /etc/hosts || echo "127.0.0.1 ${NODES[*]}" >> /etc/hosts
}

start_slurm() {
  if ! running slurmdbd; then
    /usr/sbin/slurmdbd
    wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$DBD_PORT"
  fi
  if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
  if ! running slurmctld; then
    /usr/sbin/slurmctld
    wait_for 30 slurmctld scontrol ping
  fi
  for node in "${NODES[@]}"; do
    mkdir -p "/var/spool/slurmd-$node"
    running "slurmd-$node" || /usr/sbin/slurmd -N "$node"
  done
  # A node drained or down in an earlier run's saved state comes back only when told.
  wait_for 30 "slurmd registration" bash -c "! sinfo -h -N -p gpu -o %t | grep -qE '^(unk|down\\*)'"
  if sinfo -h -N -p gpu -o %t | grep -qE '^(drain|drng|down)'; then
    scontrol update nodename="n[1-${#NODES[@]}]" state=resume
  fi
  wait_for 60 "nodes ${NODES[*]}" bash -c "[ \"\$(sinfo -h -N -p gpu -o %t | grep -cE '^(idle|mix|alloc)$')\" = ${#NODES[@]} ]"
}

stop_daemons() {  # stop_daemons NAME...: signal each daemon this script started, then wait for it
  local name pid
  for name in "$@"; do
    # slurmd/slurmctld remove their own pid files on exit: read each one once.
    pid=$(cat "$STATE_DIR/$name.pid" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    rm -f "$STATE_DIR/$name.pid"
  done
}

cmd_start() {
  require_root
  mkdir -p "$STATE_DIR"
  install_packages
  start_munge
  start_mariadb
  local before
  before=$(cat "$CONF_DIR/slurm.conf" 2>/dev/null || true)
  write_config
  if [ "$before" != "$(cat "$CONF_DIR/slurm.conf")" ] && running slurmctld; then
    log "slurm.conf changed: restarting slurmctld and the slurmds"
    stop_daemons slurmd-n2 slurmd-n1 slurmctld
  fi
  start_slurm
  log "cluster '$CLUSTER' up: $(sinfo -h -o '%P %D %t' | tr '\n' ';')"
}

cmd_stop() {
  stop_daemons slurmd-n2 slurmd-n1 slurmctld slurmdbd mariadbd munged
  log "stopped the daemons started by this script"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
