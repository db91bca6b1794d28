import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.remoting.RPCHook;
import org.apache.rocketmq.remoting.protocol.RemotingCommand;
import org.apache.rocketmq.remoting.protocol.RequestCode;

/**
 * The producer of benchmarks/proxy.py: sync sends of SIZE-byte messages, in three timed phases
 * (warm-up, one sender for the unloaded latency, THREADS senders for throughput), then one JSON
 * line on stdout. Every phase stops by itself when its time is up.
 *
 *   BenchProducer NAMESRV TOPIC WARMUP_S LATENCY_S THROUGHPUT_S THREADS SIZE [FROM=TO,...]
 *
 * FROM=TO pairs rewrite broker addresses in route answers on the client side (an RPC hook), so
 * that a plain TCP proxy (HAProxy) that cannot rewrite routes still carries the broker traffic.
 */
public class BenchProducer {
    static final class Phase {
        final List<long[]> lat = new ArrayList<>();
        final AtomicLong errors = new AtomicLong();
        long sent;
        double seconds;
    }

    public static void main(String[] a) throws Exception {
        String ns = a[0], topic = a[1];
        double warm = Double.parseDouble(a[2]), latS = Double.parseDouble(a[3]), tputS = Double.parseDouble(a[4]);
        int threads = Integer.parseInt(a[5]), size = Integer.parseInt(a[6]);
        Map<String, String> map = new LinkedHashMap<>();
        if (a.length > 7 && !a[7].isEmpty()) {
            for (String kv : a[7].split(",")) map.put(kv.split("=")[0], kv.split("=")[1]);
        }
        RPCHook hook = map.isEmpty() ? null : new RPCHook() {
            public void doBeforeRequest(String addr, RemotingCommand req) { }

            public void doAfterResponse(String addr, RemotingCommand req, RemotingCommand resp) {
                if (resp == null || resp.getBody() == null) return;
                int code = req.getCode();
                if (code != RequestCode.GET_ROUTEINFO_BY_TOPIC && code != RequestCode.GET_BROKER_CLUSTER_INFO) return;
                String body = new String(resp.getBody(), StandardCharsets.UTF_8);
                for (Map.Entry<String, String> e : map.entrySet()) {
                    body = body.replace("\"" + e.getKey() + "\"", "\"" + e.getValue() + "\"");
                }
                resp.setBody(body.getBytes(StandardCharsets.UTF_8));
            }
        };
        DefaultMQProducer p = hook == null ? new DefaultMQProducer("PG_bench") : new DefaultMQProducer("PG_bench", hook);
        p.setNamesrvAddr(ns);
        p.setInstanceName("bench-" + ProcessHandle.current().pid());
        p.setSendMsgTimeout(10000);
        p.setRetryTimesWhenSendFailed(0);
        p.start();
        byte[] body = new byte[size];
        Arrays.fill(body, (byte) 'x');
        try {
            run(p, topic, body, 1, 1.0);  // route lookup, first connection
            run(p, topic, body, threads, warm);
            Phase lat = run(p, topic, body, 1, latS);
            System.out.println("PHASE throughput");  // the runner samples the proxy's CPU here ...
            System.out.flush();
            Phase tput = run(p, topic, body, threads, tputS);
            System.out.println("PHASE done");  // ... and here
            System.out.flush();
            StringBuilder out = new StringBuilder("{");
            out.append("\"latency\":").append(json(lat)).append(",\"throughput\":").append(json(tput));
            out.append(",\"threads\":").append(threads).append(",\"size\":").append(size).append("}");
            System.out.println(out);
        } finally {
            p.shutdown();
        }
    }

    static Phase run(DefaultMQProducer p, String topic, byte[] body, int threads, double seconds) throws Exception {
        Phase ph = new Phase();
        long t0 = System.nanoTime();
        long end = t0 + (long) (seconds * 1e9);
        Thread[] ts = new Thread[threads];
        long[][] lats = new long[threads][];
        int[] counts = new int[threads];
        for (int i = 0; i < threads; i++) {
            final int k = i;
            ts[i] = new Thread(() -> {
                long[] l = new long[1 << 16];
                int n = 0;
                while (System.nanoTime() < end) {
                    long s = System.nanoTime();
                    try {
                        SendResult r = p.send(new Message(topic, "bench", body));
                        if (r.getSendStatus() != SendStatus.SEND_OK) ph.errors.incrementAndGet();
                    } catch (Exception e) {
                        ph.errors.incrementAndGet();
                        continue;
                    }
                    if (n == l.length) l = Arrays.copyOf(l, n * 2);
                    l[n++] = System.nanoTime() - s;
                }
                lats[k] = l;
                counts[k] = n;
            });
            ts[i].start();
        }
        for (Thread t : ts) t.join();
        ph.seconds = (System.nanoTime() - t0) / 1e9;
        for (int i = 0; i < threads; i++) {
            ph.lat.add(Arrays.copyOf(lats[i], counts[i]));
            ph.sent += counts[i];
        }
        return ph;
    }

    static String json(Phase ph) {
        long[] all = new long[(int) ph.sent];
        int n = 0;
        for (long[] l : ph.lat) {
            System.arraycopy(l, 0, all, n, l.length);
            n += l.length;
        }
        Arrays.sort(all);
        return String.format(java.util.Locale.ROOT,
                "{\"sent\":%d,\"errors\":%d,\"seconds\":%.3f,\"msgs_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}",
                ph.sent, ph.errors.get(), ph.seconds, ph.sent / ph.seconds, pct(all, 0.50), pct(all, 0.99));
    }

    static double pct(long[] sorted, double q) {
        if (sorted.length == 0) return Double.NaN;
        int i = (int) Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
        return sorted[i] / 1000.0;
    }
}
