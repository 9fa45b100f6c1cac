#!/usr/bin/env bash
# A single-node Slurm cluster with real accounting (slurmdbd + MariaDB), private to one folder; the MariaDB also
# holds a database for the tuning storage test ($CLIPLUNG_TEST_MYSQL_URL in DIR/env).
#   bash .ci/slurm.sh start DIR   -> writes DIR/env (source it: exports SLURM_CONF)
#   bash .ci/slurm.sh stop DIR    -> stops every daemon by its pid file
# Runs as root without systemd or cgroups: no munge (auth/none, cred/none), process tracking by
# /proc (proctrack/linuxproc), no task plugin; every daemon writes a pid file and stops by it.
set -euo pipefail
cmd=$1
D=$(realpath -m "$2")

stop() {
  for p in slurmd slurmctld slurmdbd mysql; do
    f="$D/$p.pid"
    if [ -f "$f" ]; then
      pid=$(cat "$f" 2>/dev/null || true)
      [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; } || break; sleep 0.1; done
      [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
      rm -f "$f"
    fi
  done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

mkdir -p "$D"/{state,spool,mysql,log}
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
base=$(( 20000 + RANDOM % 20000 ))
ctld=$base; slurmdport=$((base + 1)); dbdport=$((base + 2)); myport=$((base + 3))

# MariaDB in its own datadir, socket and port on 127.0.0.1.
mariadb-install-db --no-defaults --datadir="$D/mysql" --user=root --auth-root-authentication-method=normal >"$D/log/mysql-install.log" 2>&1
(setsid mariadbd --no-defaults --datadir="$D/mysql" --socket="$D/mysql.sock" --port=$myport --bind-address=127.0.0.1 \
   --pid-file="$D/mysql.pid" --user=root </dev/null >"$D/log/mysql.log" 2>&1 &)
for _ in $(seq 100); do [ -S "$D/mysql.sock" ] && break; sleep 0.1; done
mariadb --no-defaults -S "$D/mysql.sock" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
CREATE DATABASE IF NOT EXISTS cliplung_optuna;
CREATE USER IF NOT EXISTS 'optuna'@'127.0.0.1' IDENTIFIED BY 'optuna';
GRANT ALL ON cliplung_optuna.* TO 'optuna'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

cat >"$D/slurmdbd.conf" <<CONF
AuthType=auth/none
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$dbdport
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$myport
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$D/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
CONF
chmod 600 "$D/slurmdbd.conf"

cat >"$D/slurm.conf" <<CONF
ClusterName=cliplung
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld
SlurmdPort=$slurmdport
AuthType=auth/none
CredType=cred/none
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbdport
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
MinJobAge=600
# submitit ignores a task's SIGTERM (it checkpoints on the time-out signal instead): scancel and
# scontrol requeue then wait KillWait before SIGKILL. 5 s, not the default 30, keeps the tests short.
KillWait=5
# The main scheduler also runs every 2 s (default 60): a job made eligible by `scontrol update` (a requeued
# task's StartTime) starts within seconds instead of at the next minute's pass.
SchedulerParameters=sched_interval=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF="$D/slurm.conf"
echo "export SLURM_CONF=$D/slurm.conf" >"$D/env"
# The same MariaDB serves the tuning storage test (tests/test_tune.py), in a database of its own.
echo "export CLIPLUNG_TEST_MYSQL_URL=mysql+pymysql://optuna:optuna@127.0.0.1:$myport/cliplung_optuna" >>"$D/env"
port_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Daemons get no stdio of ours: a caller reading our output must not wait on them.
slurmdbd </dev/null >/dev/null 2>&1  # reads slurmdbd.conf beside $SLURM_CONF
for _ in $(seq 150); do port_open $dbdport && break; sleep 0.1; done
port_open $dbdport || { echo "slurmdbd did not start:" >&2; tail -n 5 "$D/log/slurmdbd.log" >&2; exit 1; }
slurmctld </dev/null >/dev/null 2>&1
for _ in $(seq 150); do port_open $ctld && break; sleep 0.1; done
slurmd </dev/null >/dev/null 2>&1
for _ in $(seq 150); do
  state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
echo "slurm: node $host is ${state:-down} (SLURM_CONF=$SLURM_CONF)"
[ "$state" = idle ]
