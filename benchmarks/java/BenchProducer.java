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
 * The producer of benchmarks/proxy.py: sync sends of SIZE-byte messages over several paths to the
 * same cluster (direct, through a proxy, ...), one client instance per path, in one JVM.
 *
 *   BenchProducer TOPIC WARMUP_S LATENCY_S THROUGHPUT_S SLICE_S THREADS SIZE PATH=NAMESRV[@FROM=TO,...] ...
 *
 * The paths take turns in slices of SLICE_S seconds (the order rotates every cycle), so slow
 * drift of the machine (other tenants, the broker's page cache and GC, JIT) falls on every path
 * alike: a warm-up, a latency phase (one sender: the unloaded latency) and a throughput phase
 * (THREADS senders), each phase giving every path its share of the time. Prints
 * "PHASE throughput" and "PHASE done" around the throughput phase, then one JSON line: per path
 * the totals of both phases, the messages sent in each throughput slice, and the machine's CPU
 * time during the path's turns of each phase (per CPU, from /proc/stat, in clock ticks: busy,
 * idle, stolen), which tells whether direct keeps the CPUs busy and what a message costs, and
 * the CPU ticks (user + system) of this JVM and of the processes named in the environment's
 * BENCH_PIDS (NAME=PID,...; the cluster's) during those turns: what a path costs the load itself.
 *
 * FROM=TO pairs rewrite broker addresses in route answers on the client side (an RPC hook), so
 * that a plain TCP proxy (HAProxy) that cannot rewrite routes still carries the broker traffic.
 */
public class BenchProducer {
    static final class Phase {
        final List<long[]> lat = new ArrayList<>();
        final AtomicLong errors = new AtomicLong();
        final List<Long> slices = new ArrayList<>();
        long sent;
        double seconds;
        long[] cpu = new long[0];  // per CPU: busy, idle, stolen ticks during this path's turns
        long[] proc = new long[0];  // per process of PROCS: its CPU ticks during this path's turns

        void add(Phase s) {
            if (cpu.length < s.cpu.length) cpu = Arrays.copyOf(cpu, s.cpu.length);
            for (int i = 0; i < s.cpu.length; i++) cpu[i] += s.cpu[i];
            if (proc.length < s.proc.length) proc = Arrays.copyOf(proc, s.proc.length);
            for (int i = 0; i < s.proc.length; i++) proc[i] += s.proc[i];
            lat.addAll(s.lat);
            errors.addAndGet(s.errors.get());
            slices.add(s.sent);
            sent += s.sent;
            seconds += s.seconds;
        }
    }

    static DefaultMQProducer producer(String name, String spec) throws Exception {
        String ns = spec;
        Map<String, String> map = new LinkedHashMap<>();
        int at = spec.indexOf('@');
        if (at >= 0) {
            ns = spec.substring(0, at);
            for (String kv : spec.substring(at + 1).split(",")) map.put(kv.split("=")[0], kv.split("=")[1]);
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
        p.setInstanceName("bench-" + name + "-" + ProcessHandle.current().pid());
        p.setSendMsgTimeout(10000);
        p.setRetryTimesWhenSendFailed(0);
        p.start();
        return p;
    }

    public static void main(String[] a) throws Exception {
        String topic = a[0];
        double warm = Double.parseDouble(a[1]), latS = Double.parseDouble(a[2]), tputS = Double.parseDouble(a[3]);
        double slice = Double.parseDouble(a[4]);
        int threads = Integer.parseInt(a[5]), size = Integer.parseInt(a[6]);
        List<String> names = new ArrayList<>();
        List<DefaultMQProducer> ps = new ArrayList<>();
        byte[] body = new byte[size];
        Arrays.fill(body, (byte) 'x');
        try {
            for (int i = 7; i < a.length; i++) {
                int eq = a[i].indexOf('=');
                names.add(a[i].substring(0, eq));
                ps.add(producer(a[i].substring(0, eq), a[i].substring(eq + 1)));
            }
            for (DefaultMQProducer p : ps) run(p, topic, body, 1, 1.0);  // route lookup, first connection
            int n = ps.size();
            turns(ps, topic, body, threads, warm, slice);
            Phase[] lat = turns(ps, topic, body, 1, latS, slice);
            System.out.println("PHASE throughput");  // the runner samples the middles' CPU here ...
            System.out.flush();
            Phase[] tput = turns(ps, topic, body, threads, tputS, slice);
            System.out.println("PHASE done");  // ... and here
            System.out.flush();
            StringBuilder out = new StringBuilder("{\"threads\":").append(threads).append(",\"size\":").append(size)
                    .append(",\"slice\":").append(slice).append(",\"paths\":{");
            for (int i = 0; i < n; i++) {
                if (i > 0) out.append(',');
                out.append('"').append(names.get(i)).append("\":{\"latency\":").append(json(lat[i]))
                        .append(",\"throughput\":").append(json(tput[i])).append(",\"slices\":").append(tput[i].slices)
                        .append('}');
            }
            System.out.println(out.append("}}"));
        } finally {
            for (DefaultMQProducer p : ps) p.shutdown();
        }
    }

    /** Every producer in turn for SLICE seconds at a time until each has had SECONDS; the order
     *  rotates by one every cycle. */
    static Phase[] turns(List<DefaultMQProducer> ps, String topic, byte[] body, int threads, double seconds,
                         double slice) throws Exception {
        int n = ps.size();
        Phase[] out = new Phase[n];
        for (int i = 0; i < n; i++) out[i] = new Phase();
        int cycles = Math.max(1, (int) Math.round(seconds / slice));
        for (int c = 0; c < cycles; c++) {
            for (int j = 0; j < n; j++) {
                int i = (c + j) % n;
                out[i].add(run(ps.get(i), topic, body, threads, seconds / cycles));
            }
        }
        return out;
    }

    /** Per CPU, at 3N for the "cpuN" line of /proc/stat: busy (user, nice, system, irq,
     *  softirq), idle (idle, iowait) and stolen clock ticks; empty where there is no /proc/stat. */
    static long[] cpuTicks() {
        Map<Integer, long[]> byCpu = new LinkedHashMap<>();
        int max = -1;
        try {
            for (String line : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/stat"))) {
                if (!line.startsWith("cpu") || line.length() < 4 || !Character.isDigit(line.charAt(3))) continue;
                String[] f = line.trim().split("\\s+");
                long[] v = new long[8];
                for (int i = 0; i < 8 && i + 1 < f.length; i++) v[i] = Long.parseLong(f[i + 1]);
                int n = Integer.parseInt(f[0].substring(3));
                byCpu.put(n, new long[] {v[0] + v[1] + v[2] + v[5] + v[6], v[3] + v[4], v[7]});
                max = Math.max(max, n);
            }
        } catch (Exception e) {
            return new long[0];
        }
        long[] out = new long[3 * (max + 1)];
        for (Map.Entry<Integer, long[]> e : byCpu.entrySet()) System.arraycopy(e.getValue(), 0, out, 3 * e.getKey(), 3);
        return out;
    }

    /** The processes whose CPU is counted per turn: this JVM ("producer"), then BENCH_PIDS. */
    static final Map<String, String> PROCS = new LinkedHashMap<>();
    static {
        PROCS.put("producer", "self");
        String env = System.getenv("BENCH_PIDS");
        if (env != null && !env.isEmpty()) {
            for (String kv : env.split(",")) PROCS.put(kv.split("=")[0], kv.split("=")[1]);
        }
    }

    /** user + system clock ticks of each process of PROCS, in order (-1 where it cannot be read). */
    static long[] procTicks() {
        long[] out = new long[PROCS.size()];
        int i = 0;
        for (String pid : PROCS.values()) {
            try {
                String st = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/" + pid + "/stat"));
                String[] f = st.substring(st.lastIndexOf(')') + 2).split(" ");
                out[i] = Long.parseLong(f[11]) + Long.parseLong(f[12]);
            } catch (Exception e) {
                out[i] = -1;
            }
            i++;
        }
        return out;
    }

    static Phase run(DefaultMQProducer p, String topic, byte[] body, int threads, double seconds) throws Exception {
        Phase ph = new Phase();
        long[] proc0 = procTicks();
        long[] cpu0 = cpuTicks();
        long t0 = System.nanoTime();
        long end = t0 + (long) (seconds * 1e9);
        Thread[] ts = new Thread[threads];
        long[][] lats = new long[threads][];
        int[] counts = new int[threads];
        for (int i = 0; i < threads; i++) {
            final int k = i;
            ts[i] = new Thread(() -> {
                long[] l = new long[1 << 12];
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
        long[] cpu1 = cpuTicks();
        long[] proc1 = procTicks();
        ph.proc = new long[proc0.length];
        for (int i = 0; i < proc0.length; i++) ph.proc[i] = proc0[i] < 0 || proc1[i] < 0 ? 0 : proc1[i] - proc0[i];
        ph.cpu = new long[Math.min(cpu0.length, cpu1.length)];
        for (int i = 0; i < ph.cpu.length; i++) ph.cpu[i] = cpu1[i] - cpu0[i];
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
                "{\"sent\":%d,\"errors\":%d,\"seconds\":%.3f,\"msgs_per_s\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
                        + "\"cpu_ticks\":%s,\"proc_ticks\":{%s}}",
                ph.sent, ph.errors.get(), ph.seconds, ph.sent / ph.seconds, pct(all, 0.50), pct(all, 0.99),
                Arrays.toString(ph.cpu).replace(" ", ""), procJson(ph.proc));
    }

    static String procJson(long[] ticks) {
        StringBuilder sb = new StringBuilder();
        int i = 0;
        for (String name : PROCS.keySet()) {
            if (i >= ticks.length) break;
            if (i > 0) sb.append(',');
            sb.append('"').append(name).append("\":").append(ticks[i++]);
        }
        return sb.toString();
    }

    static double pct(long[] sorted, double q) {
        if (sorted.length == 0) return Double.NaN;
        int i = (int) Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
        return sorted[i] / 1000.0;
    }
}
