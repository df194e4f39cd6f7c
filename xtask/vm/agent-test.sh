# The agent on a stock kernel, sourced by /init in the VM of `cargo xtask vm-test` (busybox
# sh). The iotwatch package is unpacked in / ($BIN is its binary): the agent runs as its unit
# would run it, with ExecStart's command and the arguments of /etc/default/iotwatch. A bridge br0 with two veth ports pa, pb whose peers live in
# namespaces a (.10) and b (.20); no IPv6 and static neighbours, so the only frames are the
# ones sent here and counts are exact. Per attach mode: the agent loads and serves /metrics,
# pings are counted exactly both ways, DNS is sampled, SIGTERM detaches everything; in tc
# mode also SIGKILL then restart leaves one filter per hook (from 6.6: one tcx program).
# Replay of a capture made by xtask/src/vm.rs is checked too, and the tc checks again with
# the kernel's BTF hidden, as on Raspberry Pi OS, and map ageing (lookup-and-delete).
# Prints "VMTEST: PASS|FAIL ..." per check and "VMTEST: DONE" at the end (the host fails a
# run without it).
ip() { /usr/sbin/ip "$@"; }; tc() { /usr/sbin/tc "$@"; }
URL=http://127.0.0.1:9477/metrics
MP=iotwatch_mac_packets_total MS=iotwatch_samples_total
pass() { echo "VMTEST: PASS $*"; }; fail() { echo "VMTEST: FAIL $*"; }
echo "VMTEST: kernel $(uname -r) $(uname -m)"

# The unit's command with the defaults file's arguments ($IOTWATCH_ARGS, --bridge br0), as
# systemd splits it; the bridge made below is br0.
. /etc/default/iotwatch
EXEC=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/iotwatch.service)
AGENT=$(eval echo "$EXEC")
case "$AGENT " in
  "$BIN run "*"--bridge br0 "*) pass "package: the unit runs $AGENT" ;;
  *) fail "package: ExecStart=$EXEC with IOTWATCH_ARGS=\"$IOTWATCH_ARGS\" is not \"$BIN run ... --bridge br0\"" ;;
esac

for f in /proc/sys/net/ipv6/conf/default/disable_ipv6 /proc/sys/net/ipv6/conf/all/disable_ipv6; do echo 1 > $f; done
ip link set lo up; ip netns add a; ip netns add b
for n in a b; do ip netns exec $n sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'; done
ip link add br0 type bridge stp_state 0; ip link set br0 up
for d in a b; do ip link add p$d type veth peer name v$d; ip link set v$d netns $d; ip link set p$d master br0 up; done
ip netns exec a ip addr add 192.168.77.10/24 dev va; ip netns exec a ip link set va up
ip netns exec b ip addr add 192.168.77.20/24 dev vb; ip netns exec b ip link set vb up
MA=$(ip netns exec a cat /sys/class/net/va/address); MB=$(ip netns exec b cat /sys/class/net/vb/address)
ip netns exec a ip neigh replace 192.168.77.20 lladdr $MB dev va nud permanent
ip netns exec b ip neigh replace 192.168.77.10 lladdr $MA dev vb nud permanent

# A zombie still answers kill -0: look at its state.
alive() { [ -e /proc/$PID/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/$PID/status; }
# agent_log: what the agent said last, with its error's first line (a verifier log is long).
agent_log() {
  local log=/tmp/agent-$MODE.log
  echo "agent| --- $MODE: the agent's log, last 25 lines"
  [ $(wc -l < $log) -gt 25 ] && grep '^iotwatch: ' $log | tail -n 1 | cut -c 1-300 | sed 's/^/agent| /'
  tail -n 25 $log | sed 's/^/agent| /'
}

# verifier_work: what the verifier walked per program, which must stay far below its limit of
# 1,000,000 instructions: a quarter of it here, so that growth shows long before users see it.
VERIFIER_BUDGET=250000
verifier_work() {
  local line n seen=0
  # logfmt quotes a value only when it must: program=iotwatch_tc, or program="..." in JSON.
  for line in $(grep -oE 'program"?[=:]"?[a-z_]+"?,? ?"?verified_instructions"?[=:][0-9]+' /tmp/agent-$MODE.log | tr -d '"' | tr ' :,' '|=|' | sort -u); do
    seen=$((seen + 1))
    n=${line##*=}; line=$(echo "$line" | tr '|' ' ')
    [ "$n" -le $VERIFIER_BUDGET ] && pass "$MODE: $line (budget $VERIFIER_BUDGET)" || fail "$MODE: $line, over the budget of $VERIFIER_BUDGET"
  done
  [ $seen -gt 0 ] || fail "$MODE: the agent logged no program's verified instructions"
}

# start: the agent attached by $ATTACH; fails (with its log) if it exits or serves no /metrics
# in 60 s. /metrics is on the default address, 127.0.0.1:9477.
start() {
  echo "--- $AGENT --attach $ATTACH $EXTRA" >> /tmp/agent-$MODE.log
  $AGENT --attach $ATTACH $EXTRA >> /tmp/agent-$MODE.log 2>&1 & PID=$!
  local i=0; while [ $i -lt 120 ]; do
    wget -q -O /dev/null $URL 2>/dev/null && { pass "$MODE: agent loaded and serves /metrics"; verifier_work; return 0; }
    alive || break; sleep 0.5; i=$((i+1)); done
  if alive; then fail "$MODE: agent serves no /metrics after 60 s"; kill -9 $PID; else fail "$MODE: agent exited before serving /metrics"; fi
  agent_log; return 1
}

# metric NAME FILTER...: sum of NAME's samples whose line holds every FILTER (0 if none).
metric() {
  local name=$1 m; shift
  m=$(wget -q -O - $URL 2>/dev/null) || { echo "unreachable"; return; }
  echo "$m" | awk -v n="$name{" -v f="$*" 'index($0, n) == 1 { k = split(f, w, " "); ok = 1
    for (i = 1; i <= k; i++) if (!index($0, w[i])) ok = 0; if (ok) s += $NF } END { print s + 0 }'
}

# expect OP WANT DESCRIPTION NAME FILTER...: polls up to 10 s until the metric OP (-eq, -ge) WANT.
expect() {
  local op=$1 want=$2 what=$3 i=0 v; shift 3
  while :; do
    v=$(metric "$@")
    case $v in *[!0-9]*|'') ;; *) [ "$v" $op "$want" ] && { pass "$MODE: $what ($v)"; return 0; } ;; esac
    [ $i -ge 20 ] && { fail "$MODE: $what: expected $op $want, got $v"; return 1; }
    sleep 0.5; i=$((i+1))
  done
}

# pings N: N echo requests a -> b and N replies, each frame counted exactly once each way.
pings() {
  local n=$1 atx arx btx brx
  atx=$(metric $MP "mac=\"$MA\"" 'direction="tx"'); arx=$(metric $MP "mac=\"$MA\"" 'direction="rx"')
  btx=$(metric $MP "mac=\"$MB\"" 'direction="tx"'); brx=$(metric $MP "mac=\"$MB\"" 'direction="rx"')
  ip netns exec a ping -c $n -i 0.05 -q 192.168.77.20 > /dev/null || fail "$MODE: ping a -> b lost packets"
  expect -eq $((atx + n)) "$n echo requests in a's tx" $MP "mac=\"$MA\"" 'direction="tx"'
  expect -eq $((brx + n)) "$n echo requests in b's rx" $MP "mac=\"$MB\"" 'direction="rx"'
  expect -eq $((btx + n)) "$n echo replies in b's tx" $MP "mac=\"$MB\"" 'direction="tx"'
  expect -eq $((arx + n)) "$n echo replies in a's rx" $MP "mac=\"$MA\"" 'direction="rx"'
}

# filters DEV DIR: iotwatch's tc filters on a hook (aya names them after the program).
filters() { tc filter show dev $1 $2 2>/dev/null | grep -c iotwatch; }
xdp_progs() { ip link show $1 | grep -c 'prog/xdp'; }
# Kernels from 6.6 attach TC through tcx links, which `tc filter show` does not list and which
# go away with a killed agent; count the loaded TC programs there instead.
tcx() { local v=$(uname -r) maj min; maj=${v%%.*}; min=${v#*.}; min=${min%%[!0-9]*}; [ $maj -gt 6 ] || [ $maj = 6 -a $min -ge 6 ]; }
progs() { bpftool prog show 2>/dev/null | grep -c "name $1"; }
# one_filter WHEN: tc mode attaches to each port's ingress and to br0's egress, once.
one_filter() {
  local h n
  if tcx; then n=$(progs iotwatch_tc); [ "$n" = 1 ] && pass "$MODE: one TC program (tcx) $1" || fail "$MODE: $n TC programs (tcx) $1 (1 expected)"; return; fi
  for h in "pa ingress" "pb ingress" "br0 egress"; do
    n=$(filters $h); [ "$n" = 1 ] && pass "$MODE: one filter on $h $1" || fail "$MODE: $n iotwatch filters on $h $1 (1 expected)"; done
}

# run_mode ATTACH [LABEL]: the checks with the agent attached by ATTACH, reported as LABEL.
run_mode() {
  local s n h d i rc left
  ATTACH=$1 MODE=${2:-$1}
  # A clean slate, whatever the mode before left (its own check reported it).
  for d in pa pb br0; do tc qdisc del dev $d clsact 2>/dev/null; done
  start || return
  case $ATTACH in
    tc) one_filter "after start" ;;
    *) [ "$(xdp_progs pa)$(xdp_progs pb)" = 11 ] && pass "$MODE: one XDP program on pa and on pb" \
         || fail "$MODE: XDP programs on pa, pb: $(xdp_progs pa), $(xdp_progs pb) (1 each expected)" ;;
  esac
  # The request and reply counts come first: the DNS check adds frames (and ICMP errors).
  pings 50
  s=$(metric $MS 'kind="dns"' 'outcome="sent"')
  # Nothing listens on b:53; the query itself is what must be sampled. busybox has no nc -u.
  ip netns exec a timeout 5 nslookup iotwatch.test 192.168.77.20 > /dev/null 2>&1
  expect -ge $((s + 1)) "DNS query sampled (samples sent, kind dns)" $MS 'kind="dns"' 'outcome="sent"'
  if [ $ATTACH = tc ]; then
    # 6.1 has no tcx: clsact filters outlive a killed agent, and a restart must not stack them.
    kill -9 $PID; sleep 1
    start || return
    one_filter "after SIGKILL and restart"
    pings 20
  fi
  kill -TERM $PID; i=0
  while alive && [ $i -lt 20 ]; do sleep 0.5; i=$((i+1)); done
  if alive; then fail "$MODE: agent still running 10 s after SIGTERM"; kill -9 $PID; agent_log
  else wait $PID; rc=$?; [ $rc = 0 ] && pass "$MODE: agent exited 0 on SIGTERM" || { fail "$MODE: agent exited $rc on SIGTERM"; agent_log; }; fi
  left=""
  for h in "pa ingress" "pb ingress" "br0 egress"; do n=$(filters $h); [ "$n" = 0 ] || left="$left $h:$n"; done
  for d in pa pb; do n=$(xdp_progs $d); [ "$n" = 0 ] || left="$left $d:xdp"; done
  n=$(progs iotwatch); [ "$n" = 0 ] || left="$left, $n iotwatch programs still loaded"
  [ -z "$left" ] && pass "$MODE: nothing left attached after SIGTERM" || fail "$MODE: left attached after SIGTERM:$left"
}

# Map ageing with timeouts of 2 s: idle MACs and conversations leave the maps through
# BPF_MAP_LOOKUP_AND_DELETE_ELEM on the per-CPU hash and LRU hash maps (a raw system call the
# agent makes itself), the totals stay, and the next pings are counted again from zero in the
# kernel on top of them.
ageing_check() {
  local tx
  ATTACH=tc MODE=ageing EXTRA="--bpf.mac-idle 2 --bpf.conversation-idle 2 --bpf.poll-interval 1"
  for d in pa pb br0; do tc qdisc del dev $d clsact 2>/dev/null; done
  start || { EXTRA=""; return; }
  pings 10
  tx=$(metric $MP "mac=\"$MA\"" 'direction="tx"')
  expect -ge 2 "a's and b's MACs aged out" iotwatch_bpf_map_aged_out_total 'map="DEVICE_STATS"'
  expect -ge 2 "both ICMP conversations aged out" iotwatch_bpf_map_aged_out_total 'map="CONVERSATIONS"'
  expect -eq 0 "per-MAC map empty" iotwatch_bpf_map_entries 'map="DEVICE_STATS"'
  expect -eq "$tx" "a's tx kept after ageing" $MP "mac=\"$MA\"" 'direction="tx"'
  pings 10
  kill -TERM $PID; wait $PID
  EXTRA=""
}

# Replay loads the programs with other globals (the verifier walks other paths) and runs them
# with BPF_PROG_TEST_RUN: /replay.pcap (xtask/src/vm.rs) holds 10 pings, one VLAN-tagged, and a
# DNS query from 02:00:00:00:00:0a.
REPLAY_FRAMES=11
replay_check() {
  local out=/tmp/replay.json rc n
  MODE=replay
  $BIN replay /replay.pcap --format json --log.level debug > $out 2> /tmp/agent-replay.log; rc=$?
  [ $rc = 0 ] && pass "replay: exit 0" || { fail "replay: exit $rc"; agent_log; return; }
  verifier_work
  # The capture's totals come first in the report; the MAC's row follows its "mac" line.
  n=$(grep -o '"packets": [0-9]*' $out | head -n 1 | grep -o '[0-9]*$')
  [ "$n" = $REPLAY_FRAMES ] && pass "replay: $n frames read" || fail "replay: $n frames read ($REPLAY_FRAMES expected)"
  n=$(grep -A 2 '"mac": "02:00:00:00:00:0a"' $out | grep -o '"tx_packets": [0-9]*' | grep -o '[0-9]*$')
  [ "$n" = $REPLAY_FRAMES ] && pass "replay: $n frames counted as the MAC's tx" || fail "replay: the MAC's tx is $n ($REPLAY_FRAMES expected)"
  grep -q '"kind": "dns"' $out && pass "replay: the DNS query is an event" || fail "replay: no dns event in the report"
}

# Raspberry Pi OS kernels have no BTF (raspberrypi/linux issue 6622): hide this kernel's
# and run the tc checks again; nothing the agent does may need it.
no_btf() {
  mount -t tmpfs no-btf /sys/kernel/btf
  if [ -e /sys/kernel/btf/vmlinux ]; then fail "no-btf: /sys/kernel/btf/vmlinux still there after hiding it"
  else pass "no-btf: /sys/kernel/btf/vmlinux hidden"; run_mode tc tc-without-btf; fi
  umount /sys/kernel/btf
}

# Generic XDP sees one buffer per GRO/TSO aggregate, with no segment count, so xdp-skb refuses
# a port that receives them: here each port, for its veth peer's TSO (on by default). With every
# port refused the agent must exit, having named for each the command that makes it countable
# (one warning a port; its closing error repeats the first); after those commands ran, it
# starts (and is stopped by the timeout), and run_mode xdp-skb counts exactly.
xdp_skb_refusal() {
  local i=0 n=0 rc refused fixes fix
  MODE=xdp-skb-refusal
  while [ $i -lt 2 ]; do
    timeout 30 $AGENT --attach xdp-skb > /tmp/agent-$MODE.log 2>&1; rc=$?
    refused=$(grep -v '^iotwatch: ' /tmp/agent-$MODE.log \
      | grep 'port [a-z0-9]* refused for `--attach xdp-skb`: its veth peer v[ab] in network namespace [ab] has segmentation offload on')
    [ -n "$refused" ] || break
    n=$(echo "$refused" | wc -l)
    fixes=$(echo "$refused" | grep -o 'switch the offload off: `[^`]*`' | sed 's/^[^`]*`//; s/`$//')
    [ $rc != 0 ] && [ $rc != 124 ] \
      && pass "$MODE: $n port(s) refused for their veth peers' TSO (exit $rc); running: $(echo "$fixes" | tr '\n' ';')" \
      || { fail "$MODE: exit $rc with $n port(s) refused"; agent_log; }
    IFS='
'
    for fix in $fixes; do eval "$fix" || fail "$MODE: the suggested command failed: $fix"; done
    unset IFS
    i=$((i+1))
  done
  [ $i = 1 ] && [ "$n" = 2 ] && pass "$MODE: both ports refused in one run, then countable after the commands named" \
    || { fail "$MODE: $i run(s) with refusals, $n port(s) in the last (1 run, 2 ports expected)"; agent_log; }
}

replay_check
run_mode tc
xdp_skb_refusal
for mode in xdp-skb xdp; do run_mode $mode; done
ageing_check
no_btf
echo "VMTEST: DONE"
