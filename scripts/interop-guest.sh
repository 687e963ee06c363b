# In the test bed (scripts/test-all, step 5): provider-ib against rdma-core's own librdmacm
# programs on rxe0, both ways. Each side is bounded; the script fails if either exchange does.
A=10.11.12.13
T=/usr/bin/timeout
$T 60 rdma_server -s $A -p 7471 >/tmp/rdma_server.log 2>&1 &
server=$!
sleep 1
$T 60 interop client $A 7471 rxe0 || { echo "interop: anyverbs client against rdma_server failed"; exit 1; }
wait $server || { echo "interop: rdma_server failed:"; cat /tmp/rdma_server.log; exit 1; }
echo "interop: anyverbs client against rdma_server: ok"
$T 60 interop server $A 7472 rxe0 &
server=$!
sleep 2
$T 60 rdma_client -s $A -p 7472 || { echo "interop: rdma_client against the anyverbs server failed"; exit 1; }
wait $server || { echo "interop: the anyverbs server failed"; exit 1; }
echo "interop: rdma_client against the anyverbs server: ok"
# rping: the real one against anyverbs speaking its protocol (RDMA READ of the client's source,
# RDMA WRITE into its sink, checked), both ways.
$T 60 /usr/bin/rping -s -a $A -p 7474 -C 3 -S 64 -V >/tmp/rping_server.log 2>&1 &
server=$!
sleep 1
$T 60 /opt/anyverbs/bin/rping_peer client $A 7474 3 64 || { echo "interop: anyverbs rping_peer client failed:"; cat /tmp/rping_server.log; exit 1; }
wait $server
echo "interop: anyverbs rping client against rping -s: ok"
$T 60 /opt/anyverbs/bin/rping_peer server $A 7475 &
server=$!
sleep 2
$T 60 /usr/bin/rping -c -a $A -p 7475 -C 3 -S 64 -V || { echo "interop: rping -c against the anyverbs server failed"; exit 1; }
wait $server || { echo "interop: the anyverbs rping server failed"; exit 1; }
echo "interop: rping -c -V against the anyverbs rping server: ok"
