#!/bin/sh
# shellcheck shell=sh disable=SC2317 # (the checks are called through check())
# The in-guest half of testbed/selftest (busybox sh). Prints PASS/FAIL per check, writes
# /out/selftest.txt, and exits 7 when every check passed (so the host also sees that an exit
# status other than 0 comes back), 1 otherwise.
T=/usr/bin/timeout
TC=/usr/sbin/tc
IP=/usr/bin/ip
RDMA=/usr/bin/rdma
failed=0
REPORT=/out/selftest.txt
: >"$REPORT"

check() { # DESCRIPTION COMMAND...
	desc=$1
	shift
	if "$@" >/tmp/check.log 2>&1; then
		echo "PASS $desc" | tee -a "$REPORT"
	else
		echo "FAIL $desc" | tee -a "$REPORT"
		sed 's/^/    /' /tmp/check.log | tail -30
		failed=1
	fi
}
note() { echo "     $*" | tee -a "$REPORT"; }

links_at_boot() {
	$RDMA link show | grep -q 'link rxe0/1 state ACTIVE .*netdev dummy0' &&
		$RDMA link show | grep -q 'link siw0/1 state ACTIVE .*netdev dummy1'
}
devinfo_both() {
	l=$(ibv_devinfo -l) && echo "$l" && echo "$l" | grep -qx '[[:space:]]*rxe0' && echo "$l" | grep -qx '[[:space:]]*siw0' &&
		ibv_devinfo -d rxe0 | grep -q PORT_ACTIVE && ibv_devinfo -d siw0 | grep -q PORT_ACTIVE
}
rping_over() { # ADDR: an rdma_cm exchange, server and client both bounded
	$T 30 rping -s -a "$1" -C 3 >/tmp/rping-server.log 2>&1 &
	srv=$!
	sleep 0.5
	$T 20 rping -c -a "$1" -C 3 -v
	rc=$?
	wait "$srv"
	src=$?
	echo "client $rc server $src"
	cat /tmp/rping-server.log
	[ "$rc" = 0 ] && [ "$src" = 0 ]
}
field() { # INFO-LINE KEY
	echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

identity_cycle() { # NAME
	before=$(tb-device info "$1") || return 1
	tb-device delete "$1" || return 1
	tb-device add-same "$1" || return 1
	same=$(tb-device info "$1") || return 1
	tb-device delete "$1" || return 1
	tb-device add-other "$1" || return 1
	other=$(tb-device info "$1") || return 1
	tb-device restore || return 1
	back=$(tb-device info "$1") || return 1
	echo "before:    $before"
	echo "add-same:  $same"
	echo "add-other: $other"
	echo "restored:  $back"
	{
		echo "$1 before    $before"
		echo "$1 add-same  $same"
		echo "$1 add-other $other"
		echo "$1 restored  $back"
	} >>/out/identities.txt
	g0=$(field "$before" node_guid)
	[ -n "$g0" ] || return 1
	[ "$(field "$same" node_guid)" = "$g0" ] || { echo "add-same changed the node GUID"; return 1; }
	[ "$(field "$same" index)" != "$(field "$before" index)" ] || { echo "add-same kept the index"; return 1; }
	[ "$(field "$other" node_guid)" != "$g0" ] || { echo "add-other kept the node GUID"; return 1; }
	[ "$(field "$back" node_guid)" = "$g0" ] || { echo "restore did not bring the GUID back"; return 1; }
	[ "$(field "$back" netdev)" = "$(field "$before" netdev)" ] || { echo "restore: wrong netdev"; return 1; }
}

flap_back() {
	tb-device flap siw0 1 && tb-device info siw0 | grep -q 'state=ACTIVE'
}

delete_missing_fails() {
	tb-device delete rxe0 || return 1
	if tb-device delete rxe0; then echo "a second delete succeeded"; return 1; fi
	tb-device add-same rxe0 || return 1
	if tb-device add-same rxe0; then echo "a second add succeeded"; return 1; fi
	tb-device info rxe0 | grep -q netdev=dummy0
}

blocked_delete() {
	# ibv_rc_pingpong's server holds rxe0's verbs objects while it waits for a client
	ibv_rc_pingpong -d rxe0 -g 1 -p 18600 >/tmp/pingpong.log 2>&1 &
	holder=$!
	sleep 1
	if TB_DEVICE_TIMEOUT=3 tb-device delete rxe0; then
		echo "the delete returned although a process held the device"
		kill "$holder"
		return 1
	fi
	kill "$holder"
	tb-device restore || return 1
	tb-device info rxe0 | grep -q 'netdev=dummy0 .*state=ACTIVE'
}

netem_works() {
	# A qdisc on dummy1 takes the packets routed out of it (dummy drops them after the qdisc).
	$TC qdisc add dev dummy1 root netem delay 50ms loss 0% || return 1
	$IP route add 10.99.0.0/24 dev dummy1 || return 1
	ping -c 3 -W 1 10.99.0.7 >/dev/null 2>&1
	$TC -s qdisc show dev dummy1
	sent=$($TC -s qdisc show dev dummy1 | awk '/Sent/{print $4; exit}')
	$IP route del 10.99.0.0/24 dev dummy1
	[ "${sent:-0}" -ge 3 ] || { echo "netem on dummy1 saw ${sent:-0} packets"; return 1; }
	# It delays real traffic: siw's TCP between local addresses goes over lo (rxe's loopback
	# bypasses every qdisc), so time an rdma_cm exchange on siw0 with netem on lo.
	s0=$(cut -d' ' -f1 /proc/uptime)
	rping_over 10.22.0.1 >/dev/null || return 1
	s1=$(cut -d' ' -f1 /proc/uptime)
	$TC qdisc add dev lo root netem delay 100ms || return 1
	rping_over 10.22.0.1 >/dev/null || return 1
	s2=$(cut -d' ' -f1 /proc/uptime)
	tb-device restore >/dev/null || return 1
	echo "siw0 rping: $(awk -v a="$s0" -v b="$s1" 'BEGIN{print b-a}') s plain, $(awk -v a="$s1" -v b="$s2" 'BEGIN{print b-a}') s with netem delay 100ms on lo"
	awk -v a="$s0" -v b="$s1" -v c="$s2" 'BEGIN{exit !((c-b) > (b-a) + 0.5)}'
}

# shellcheck disable=SC3045 # (busybox sh has ulimit -l)
env_seen() {
	[ "$ANYVERBS_TESTBED" = 1 ] && [ "$ANYVERBS_TESTBED_OUT" = /out ] &&
		[ "$ANYVERBS_TESTBED_DEVICES" = "rxe0 siw0" ] && [ "$RUST_BACKTRACE" = 1 ] &&
		[ "$SELFTEST_TOKEN" = "it's a \"token\" with \$ and spaces" ] &&
		[ "$(pwd)" = /opt/anyverbs/work ] && [ "$(id -u)" = 0 ] &&
		[ "$(ulimit -l)" = unlimited ]
}

check "rdma link: rxe0 on dummy0 and siw0 on dummy1, ACTIVE" links_at_boot
check "ibv_devinfo lists rxe0 and siw0, ports active" devinfo_both
check "rping (rdma_cm) over rxe0 10.11.12.13" rping_over 10.11.12.13
check "rping (rdma_cm) over siw0 10.22.0.1" rping_over 10.22.0.1
check "rxe0: add-same keeps GUID (new index), add-other changes it, restore" identity_cycle rxe0
note "$(grep '^rxe0' /out/identities.txt | tr '\n' ';')"
check "siw0: add-same keeps GUID (new index), add-other changes it, restore" identity_cycle siw0
note "$(grep '^siw0' /out/identities.txt | tr '\n' ';')"
check "tb-device flap siw0 1: back ACTIVE" flap_back
check "tb-device delete/add-same fail clearly when there is nothing to do" delete_missing_fails
check "tb-device delete gives up (3 s) while a process holds rxe0; restore recovers once it ends" blocked_delete
check "rping over rxe0 again, after the lifecycle actions" rping_over 10.11.12.13
check "rping over siw0 again, after the lifecycle actions" rping_over 10.22.0.1
check "netem: a qdisc on dummy1 takes packets; delay on lo slows siw0" netem_works
note "$(grep -h 'siw0 rping' /tmp/check.log)"
check "environment, cwd, root, ulimit -l" env_seen
check "--bin on PATH" sh -c 'hello-from-bin | grep -q "hello from --bin"'

if [ $failed = 0 ]; then
	echo "ALL PASSED" | tee -a "$REPORT"
	exit 7
fi
echo "SOME FAILED" | tee -a "$REPORT"
exit 1
