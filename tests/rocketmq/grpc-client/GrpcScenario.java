import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientConfigurationBuilder;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.SessionCredentials;
import org.apache.rocketmq.client.apis.StaticSessionCredentialsProvider;
import org.apache.rocketmq.client.apis.consumer.ConsumeResult;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.PushConsumer;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.message.MessageBuilder;
import org.apache.rocketmq.client.apis.message.MessageView;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.apis.producer.Transaction;
import org.apache.rocketmq.client.apis.producer.TransactionResolution;

/**
 * Real 5.x gRPC traffic (plaintext) through the proxy, with its own ground truth.
 *
 * Usage: GrpcScenario ENDPOINT OUT_JSON
 * Topics: GrpcTopic (NORMAL), FifoTopic (FIFO), DelayTopic (DELAY), TxTopic (TRANSACTION).
 */
public class GrpcScenario {
    static final String NORMAL = "GrpcTopic", FIFO = "FifoTopic", DELAY = "DelayTopic", TX = "TxTopic";
    static final Map<String, Object> truth = new LinkedHashMap<>();
    static final List<Map<String, Object>> sent = Collections.synchronizedList(new ArrayList<>());
    static final Map<String, Integer> counts = new ConcurrentHashMap<>();
    static final Map<String, List<Map<String, Object>>> received = new TreeMap<>();
    static ClientServiceProvider pv;

    public static void main(String[] a) {
        try {
            run(a);
        } catch (Throwable t) {
            t.printStackTrace();
            System.out.flush();
            Runtime.getRuntime().halt(1);
        }
    }

    static void count(String op) {
        counts.merge(op, 1, Integer::sum);
    }

    static void run(String[] a) throws Exception {
        String endpoint = a[0], out = a[1];
        long t0 = System.currentTimeMillis();
        pv = ClientServiceProvider.loadService();
        // -Drmqsniff.tls=true: the client's own default (TLS on, any server certificate trusted)
        boolean tls = Boolean.getBoolean("rmqsniff.tls");
        // -Drmqsniff.accessKey=AK -Drmqsniff.secretKey=SK: every call carries a signed `authorization`
        ClientConfigurationBuilder cb = ClientConfiguration.newBuilder().setEndpoints(endpoint).enableSsl(tls)
                .setRequestTimeout(Duration.ofSeconds(10));
        String ak = System.getProperty("rmqsniff.accessKey"), sk = System.getProperty("rmqsniff.secretKey");
        // -Drmqsniff.securityToken=TOKEN: also x-mq-session-token, a fresh one (TOKEN + a counter) on
        // every call, like short-lived STS tokens: HPACK then sends each as a new value under a name
        // from its dynamic table, which a capture cut mid-connection cannot name
        String token = System.getProperty("rmqsniff.securityToken");
        AtomicLong tokens = new AtomicLong();
        if (ak != null && sk != null) cb.setCredentialProvider(token == null
                ? new StaticSessionCredentialsProvider(ak, sk)
                : () -> new SessionCredentials(ak, sk, token + tokens.incrementAndGet()));
        ClientConfiguration cfg = cb.build();
        truth.put("client", "java rocketmq-client-java " + System.getProperty("rmqsniff.client.version", "?"));
        truth.put("protocol", "grpc");
        truth.put("endpoint", endpoint);
        truth.put("tls", tls);

        Producer p = pv.newProducerBuilder().setClientConfiguration(cfg).setTopics(NORMAL, FIFO, DELAY).build();
        for (int i = 0; i < 10; i++) {
            Message m = base(NORMAL, "TagGrpc", "normal", i).setKeys("grpc-" + i).build();
            record(m, "normal", p.send(m));
        }
        for (int i = 0; i < 5; i++) {
            Message m = base(FIFO, "TagFifo", "fifo", i).setMessageGroup("fifo-group-" + (i % 2)).build();
            record(m, "fifo", p.send(m));
        }
        for (int i = 0; i < 3; i++) {
            Message m = base(DELAY, "TagDelay", "delay", i)
                    .setDeliveryTimestamp(System.currentTimeMillis() + 2000).build();
            record(m, "delay", p.send(m));
        }
        p.close();

        Set<String> checked = ConcurrentHashMap.newKeySet();
        Producer tp = pv.newProducerBuilder().setClientConfiguration(cfg).setTopics(TX)
                .setTransactionChecker(mv -> {
                    checked.add(mv.getMessageId().toString());
                    return TransactionResolution.COMMIT;
                }).build();
        String[] plan = {"COMMIT", "ROLLBACK"};
        List<String> committed = new ArrayList<>();
        for (int i = 0; i < plan.length; i++) {
            Transaction tx = tp.beginTransaction();
            Message m = base(TX, "TagTx", "transaction", i).build();
            Map<String, Object> e = record(m, "transaction", tp.send(m, tx));
            e.put("planned_resolution", plan[i]);
            if (plan[i].equals("COMMIT")) {
                tx.commit();
                committed.add(label("transaction", i));
            } else {
                tx.rollback();
            }
        }
        tp.close();

        // SimpleConsumer: receive, change invisible duration of one message, ack all.
        List<Map<String, Object>> simpleGot = bucket("simple");
        SimpleConsumer sc = pv.newSimpleConsumerBuilder().setClientConfiguration(cfg).setConsumerGroup("GID_simple")
                .setAwaitDuration(Duration.ofSeconds(5))
                .setSubscriptionExpressions(Map.of(NORMAL, FilterExpression.SUB_ALL)).build();
        Set<String> want = labels("normal", 10);
        boolean changed = false;
        long deadline = System.currentTimeMillis() + 90000;
        while (!labelsOf(simpleGot).containsAll(want) && System.currentTimeMillis() < deadline) {
            List<MessageView> got = sc.receive(16, Duration.ofSeconds(20));
            count("receive_calls");
            for (MessageView mv : got) {
                Map<String, Object> r = recv(mv);
                if (!changed) {
                    sc.changeInvisibleDuration(mv, Duration.ofSeconds(15));
                    count("change_invisible_duration");
                    r.put("changed_invisible_duration", true);
                    changed = true;
                }
                sc.ack(mv);
                count("ack");
                simpleGot.add(r);
            }
        }
        sc.close();
        if (!labelsOf(simpleGot).containsAll(want)) throw new IllegalStateException("simple consumer missed messages");

        // PushConsumers: FIFO (orderly group) and DELAY + TRANSACTION.
        List<Map<String, Object>> fifoGot = bucket("push_fifo");
        PushConsumer pf = pv.newPushConsumerBuilder().setClientConfiguration(cfg).setConsumerGroup("GID_fifo")
                .setSubscriptionExpressions(Map.of(FIFO, FilterExpression.SUB_ALL))
                .setMessageListener(mv -> { fifoGot.add(recv(mv)); return ConsumeResult.SUCCESS; }).build();
        List<Map<String, Object>> pushGot = bucket("push");
        PushConsumer pc = pv.newPushConsumerBuilder().setClientConfiguration(cfg).setConsumerGroup("GID_push")
                .setSubscriptionExpressions(Map.of(DELAY, FilterExpression.SUB_ALL, TX, FilterExpression.SUB_ALL))
                .setMessageListener(mv -> { pushGot.add(recv(mv)); return ConsumeResult.SUCCESS; }).build();
        Set<String> wantPush = labels("delay", 3);
        wantPush.addAll(committed);
        while (!(labelsOf(fifoGot).containsAll(labels("fifo", 5)) && labelsOf(pushGot).containsAll(wantPush))) {
            if (System.currentTimeMillis() > deadline + 30000) {
                throw new IllegalStateException("push consumers missed messages: fifo=" + labelsOf(fifoGot)
                        + " push=" + labelsOf(pushGot));
            }
            Thread.sleep(200);
        }
        Thread.sleep(1500); // let the acks go out
        pf.close();
        pc.close();

        truth.put("counts", new TreeMap<>(counts));
        truth.put("transaction_checks", new ArrayList<>(checked));
        truth.put("sent", sent);
        truth.put("received", received);
        truth.put("elapsed_ms", System.currentTimeMillis() - t0);
        Json.writeFile(out, truth);
        System.out.println("OK sent=" + sent.size() + " counts=" + counts);
        System.exit(0);
    }

    static MessageBuilder base(String topic, String tag, String kind, int i) {
        return pv.newMessageBuilder().setTopic(topic).setTag(tag)
                .setBody((kind + " grpc message " + i).getBytes(StandardCharsets.UTF_8))
                .addProperty("kind", kind).addProperty("idx", Integer.toString(i));
    }

    static Map<String, Object> record(Message m, String kind, SendReceipt r) {
        count("send_" + kind);
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("kind", kind);
        e.put("msg_id", r.getMessageId().toString());
        e.put("topic", m.getTopic());
        e.put("tags", m.getTag().orElse(null));
        e.put("keys", new ArrayList<>(m.getKeys()));
        e.put("message_group", m.getMessageGroup().orElse(null));
        e.put("delivery_timestamp", m.getDeliveryTimestamp().orElse(null));
        e.put("user_properties", new TreeMap<>(m.getProperties()));
        byte[] body = bytes(m.getBody());
        e.put("body_len", body.length);
        e.put("body_sha256", Json.sha256(body));
        sent.add(e);
        return e;
    }

    static Map<String, Object> recv(MessageView mv) {
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("msg_id", mv.getMessageId().toString());
        e.put("topic", mv.getTopic());
        e.put("tags", mv.getTag().orElse(null));
        e.put("keys", new ArrayList<>(mv.getKeys()));
        e.put("message_group", mv.getMessageGroup().orElse(null));
        e.put("delivery_attempt", mv.getDeliveryAttempt());
        e.put("kind", mv.getProperties().get("kind"));
        e.put("idx", mv.getProperties().get("idx"));
        byte[] body = bytes(mv.getBody());
        e.put("body_len", body.length);
        e.put("body_sha256", Json.sha256(body));
        return e;
    }

    static byte[] bytes(ByteBuffer b) {
        ByteBuffer d = b.duplicate();
        byte[] out = new byte[d.remaining()];
        d.get(out);
        return out;
    }

    static String label(String kind, int i) {
        return kind + ":" + i;
    }

    static Set<String> labels(String kind, int n) {
        Set<String> s = ConcurrentHashMap.newKeySet();
        for (int i = 0; i < n; i++) s.add(label(kind, i));
        return s;
    }

    static Set<String> labelsOf(List<Map<String, Object>> l) {
        Set<String> s = ConcurrentHashMap.newKeySet();
        synchronized (l) {
            for (Map<String, Object> e : l) s.add(e.get("kind") + ":" + e.get("idx"));
        }
        return s;
    }

    static List<Map<String, Object>> bucket(String name) {
        List<Map<String, Object>> l = Collections.synchronizedList(new ArrayList<>());
        received.put(name, l);
        return l;
    }
}
