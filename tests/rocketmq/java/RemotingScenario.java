import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.consumer.rebalance.AllocateMessageQueueAveragely;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.LocalTransactionState;
import org.apache.rocketmq.client.producer.SendCallback;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.TransactionListener;
import org.apache.rocketmq.client.producer.TransactionMQProducer;
import org.apache.rocketmq.client.producer.TransactionSendResult;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageClientExt;
import org.apache.rocketmq.common.message.MessageConst;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.remoting.RPCHook;
import org.apache.rocketmq.remoting.protocol.heartbeat.MessageModel;
import org.apache.rocketmq.acl.common.AclClientRPCHook;
import org.apache.rocketmq.acl.common.SessionCredentials;

/**
 * Real 4.x-API remoting traffic with its own ground truth.
 *
 * Usage: RemotingScenario MODE NAMESRV TOPIC OUT_JSON
 *   MODE produce-consume : sync/async/oneway/batch/ordered/delay/timer/compressed sends, then a
 *                          push consumer, a lite pull consumer and a broadcast consumer
 *   MODE pop             : sync sends, then a push consumer in POP mode (group CG_pop)
 *   MODE trace-context   : sync sends carrying trace context (traceparent+tracestate, sw8, b3 by turns),
 *                          then a push consumer (group CG_trace_TOPIC)
 *   MODE transaction     : half messages (UNKNOW then COMMIT on check-back, plus COMMIT and
 *                          ROLLBACK right away), then a push consumer for the committed ones
 *   MODE journey         : keyed sync sends (some with traceparent / sw8 user properties) and a push
 *                          consumer CG_journey that retries some messages once, dead-letters one and
 *                          is slow on a burst; a final burst after it stops leaves lag (see Journey)
 *   MODE journey-trace   : journey with enableMsgTrace on producer and consumer (RMQ_SYS_TRACE_TOPIC)
 * Header serialization follows -Drocketmq.serialize.type (JSON default, or ROCKETMQ).
 * -Drmqsniff.accessKey=AK -Drmqsniff.secretKey=SK: producers and consumers sign every request with
 * AclClientRPCHook (extFields AccessKey and Signature; SecurityToken too with
 * -Drmqsniff.securityToken=TOKEN); off by default.
 * -Drmqsniff.msgTrace=true: producers and push consumers with enableMsgTrace (records to
 * RMQ_SYS_TRACE_TOPIC); off by default.
 */
public class RemotingScenario {
    static final int N = 10;
    static String ns, topic, tag;
    static final Map<String, Object> truth = new LinkedHashMap<>();
    static final List<Map<String, Object>> sent = Collections.synchronizedList(new ArrayList<>());
    static final Map<String, Integer> counts = new TreeMap<>();
    static final Map<String, List<Map<String, Object>>> received = new TreeMap<>();

    public static void main(String[] a) {
        try {
            run(a);
        } catch (Throwable t) {
            t.printStackTrace();
            System.out.flush();
            Runtime.getRuntime().halt(1); // client threads are non-daemon: never hang on failure
        }
    }

    static void run(String[] a) throws Exception {
        String mode = a[0];
        ns = a[1];
        topic = a[2];
        String out = a[3];
        tag = topic.replaceAll("[^A-Za-z0-9]", "");
        long t0 = System.currentTimeMillis();
        truth.put("scenario_mode", mode);
        truth.put("client", "java rocketmq-client " + org.apache.rocketmq.common.MQVersion.getVersionDesc(
                org.apache.rocketmq.common.MQVersion.CURRENT_VERSION));
        truth.put("protocol", "remoting");
        truth.put("serialize_type", System.getProperty("rocketmq.serialize.type", "JSON"));
        truth.put("namesrv", ns);
        truth.put("topic", topic);
        if (msgTrace()) truth.put("msg_trace", true);
        switch (mode) {
            case "produce-consume": produceConsume(); break;
            case "pop": pop(); break;
            case "transaction": transaction(); break;
            case "trace-context": traceContext(); break;
            case "journey": Journey.run(false); break;
            case "journey-trace": Journey.run(true); break;
            default: throw new IllegalArgumentException(mode);
        }
        truth.put("counts", counts);
        truth.put("sent", sent);
        truth.put("received", received);
        truth.put("elapsed_ms", System.currentTimeMillis() - t0);
        Json.writeFile(out, truth);
        System.out.println("OK sent=" + sent.size() + " counts=" + counts);
        System.exit(0);
    }

    static Message msg(String t, String tags, String keys, byte[] body, String kind, int i) {
        Message m = new Message(t, tags, keys, body);
        m.putUserProperty("kind", kind);
        m.putUserProperty("idx", Integer.toString(i));
        return m;
    }

    static byte[] body(String kind, int i) {
        return (kind + " message " + i + " from rmqsniff").getBytes(StandardCharsets.UTF_8);
    }

    static synchronized void count(String op, int n) {
        counts.merge(op, n, Integer::sum);
    }

    static Map<String, Object> record(Message m, String kind, SendResult r, int batchIndex) {
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("kind", kind);
        e.put("msg_id", m.getProperty(MessageConst.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX));
        e.put("topic", m.getTopic());
        e.put("tags", m.getTags());
        e.put("keys", m.getKeys());
        Map<String, String> user = new TreeMap<>();
        for (Map.Entry<String, String> p : m.getProperties().entrySet()) {
            if (!MessageConst.STRING_HASH_SET.contains(p.getKey())) user.put(p.getKey(), p.getValue());
        }
        e.put("user_properties", user);
        e.put("body_len", m.getBody().length);
        e.put("body_sha256", Json.sha256(m.getBody()));
        if (m.getDelayTimeLevel() > 0) e.put("delay_level", m.getDelayTimeLevel());
        if (r != null) {
            String[] off = r.getOffsetMsgId() == null ? new String[0] : r.getOffsetMsgId().split(",");
            e.put("offset_msg_id", batchIndex < off.length ? off[batchIndex] : null);
            e.put("queue_id", r.getMessageQueue().getQueueId());
            e.put("queue_offset", r.getQueueOffset() + batchIndex);
            e.put("send_status", r.getSendStatus().name());
            e.put("result_msg_id", r.getMsgId());
            if (r instanceof TransactionSendResult) {
                e.put("transaction_id", r.getTransactionId());
                e.put("local_state", ((TransactionSendResult) r).getLocalTransactionState().name());
            }
        }
        return e;
    }

    /** The ACL signing hook when -Drmqsniff.accessKey/secretKey are set, else null (the clients' default). */
    static RPCHook hook() {
        String ak = System.getProperty("rmqsniff.accessKey"), sk = System.getProperty("rmqsniff.secretKey");
        String token = System.getProperty("rmqsniff.securityToken");
        return ak == null || sk == null ? null : new AclClientRPCHook(token == null
                ? new SessionCredentials(ak, sk) : new SessionCredentials(ak, sk, token));
    }

    static boolean msgTrace() {
        return Boolean.getBoolean("rmqsniff.msgTrace");
    }

    static String hex(java.util.Random r, int bytes) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < bytes; i++) b.append(String.format("%02x", r.nextInt(256)));
        return b.toString();
    }

    static String b64(String s) {
        return java.util.Base64.getEncoder().encodeToString(s.getBytes(StandardCharsets.UTF_8));
    }

    /** Sync sends with W3C traceparent+tracestate, SkyWalking sw8 or Zipkin b3 user properties by
     *  turns (the names OpenTelemetry, SkyWalking and Brave agents use), then a push consumer. */
    static void traceContext() throws Exception {
        java.util.Random r = new java.security.SecureRandom();
        DefaultMQProducer p = producer("PG_" + tag);
        for (int i = 0; i < N; i++) {
            Message m = msg(topic, "TagTrace", "trace-" + i, body("trace", i), "trace", i);
            if (i % 3 == 0) {
                m.putUserProperty("traceparent", "00-" + hex(r, 16) + "-" + hex(r, 8) + "-01");
                m.putUserProperty("tracestate", "rmqsniff=" + i + ",congo=t61rcWkgMzE");
            } else if (i % 3 == 1) {
                m.putUserProperty("sw8", "1-" + b64(hex(r, 8) + "." + i) + "-" + b64("seg." + hex(r, 4)) + "-" + i
                        + "-" + b64("order-service") + "-" + b64("order@host") + "-" + b64("/orders/" + i)
                        + "-" + b64(ns));
            } else {
                m.putUserProperty("b3", hex(r, 16) + "-" + hex(r, 8) + "-1-" + hex(r, 8));
            }
            sent.add(record(m, "sync", p.send(m), 0));
        }
        count("sync", N);
        // the trace dispatcher sends its Pub records in the background (first to a trace topic that
        // does not exist yet: the broker makes it on the first send); shutdown does not wait for them
        if (msgTrace()) Thread.sleep(3000);
        p.shutdown();
        DefaultMQPushConsumer c = pushConsumer("CG_trace_" + tag, MessageModel.CLUSTERING, "trace");
        waitFor(expectedIds(), "trace", System.currentTimeMillis() + 90000);
        quiesce();
        c.shutdown();
    }

    static DefaultMQProducer producer(String group) throws Exception {
        DefaultMQProducer p = new DefaultMQProducer(group, hook(), msgTrace(), null);
        p.setNamesrvAddr(ns);
        apiTimeout(p);
        p.setSendMsgTimeout(15000);
        p.setRetryTimesWhenSendFailed(0);
        p.setRetryTimesWhenSendAsyncFailed(0);
        p.setInstanceName(group + "-" + ProcessHandle.current().pid());
        p.start();
        return p;
    }

    /** -Drmqsniff.apiTimeoutMs=N (opt-in): the client's name server/broker call timeout instead of its
     *  default 3000 ms, for TLS handshakes on a loaded machine. */
    static void apiTimeout(org.apache.rocketmq.client.ClientConfig c) {
        Integer ms = Integer.getInteger("rmqsniff.apiTimeoutMs");
        if (ms != null) c.setMqClientApiTimeout(ms);
    }

    static void produceConsume() throws Exception {
        DefaultMQProducer p = producer("PG_" + tag);
        for (int i = 0; i < N; i++) {
            Message m = msg(topic, "TagSync", "sync-" + i, body("sync", i), "sync", i);
            sent.add(record(m, "sync", p.send(m), 0));
        }
        count("sync", N);
        CountDownLatch latch = new CountDownLatch(N);
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        for (int i = 0; i < N; i++) {
            Message m = msg(topic, "TagAsync", "async-" + i, body("async", i), "async", i);
            p.send(m, new SendCallback() {
                public void onSuccess(SendResult r) { sent.add(record(m, "async", r, 0)); latch.countDown(); }
                public void onException(Throwable e) { errors.add(e.toString()); latch.countDown(); }
            });
        }
        if (!latch.await(60, TimeUnit.SECONDS) || !errors.isEmpty()) throw new IllegalStateException("async: " + errors);
        count("async", N);
        for (int i = 0; i < 5; i++) {
            Message m = msg(topic, "TagOneway", "oneway-" + i, body("oneway", i), "oneway", i);
            p.sendOneway(m);
            sent.add(record(m, "oneway", null, 0));
        }
        count("oneway", 5);
        List<Message> batch = new ArrayList<>();
        for (int i = 0; i < 5; i++) batch.add(msg(topic, "TagBatch", "batch-" + i, body("batch", i), "batch", i));
        SendResult br = p.send(batch);
        for (int i = 0; i < batch.size(); i++) {
            Map<String, Object> e = record(batch.get(i), "batch", br, i);
            e.put("batch_msg_id", br.getMsgId() == null ? null : br.getMsgId().split(",")[i]);
            sent.add(e);
        }
        count("batch", 1);
        count("batch_messages", batch.size());
        for (int i = 0; i < N; i++) {
            Message m = msg(topic, "TagOrder", "order-" + i, body("ordered", i), "ordered", i);
            SendResult r = p.send(m, (mqs, msg, arg) -> mqs.get((Integer) arg % mqs.size()), i % 2);
            sent.add(record(m, "ordered", r, 0));
        }
        count("ordered", N);
        for (int i = 0; i < 3; i++) {
            Message m = msg(topic, "TagDelay", "delay-" + i, body("delay", i), "delay", i);
            m.setDelayTimeLevel(1); // 1 s
            sent.add(record(m, "delay", p.send(m), 0));
        }
        count("delay", 3);
        for (int i = 0; i < 2; i++) {
            Message m = msg(topic, "TagTimer", "timer-" + i, body("timer", i), "timer", i);
            m.setDelayTimeSec(2); // 5.x timer message
            sent.add(record(m, "timer", p.send(m), 0));
        }
        count("timer", 2);
        for (int i = 0; i < 2; i++) {
            StringBuilder sb = new StringBuilder();
            while (sb.length() < 8192) sb.append("compressible payload line ").append(i).append(' ').append(sb.length()).append('\n');
            Message m = msg(topic, "TagBig", "big-" + i, sb.toString().getBytes(StandardCharsets.UTF_8), "compressed", i);
            sent.add(record(m, "compressed", p.send(m), 0));
        }
        count("compressed", 2);
        p.shutdown();

        Set<String> expected = expectedIds();
        DefaultMQPushConsumer push = pushConsumer("CG_push_" + tag, MessageModel.CLUSTERING, "push");
        DefaultMQPushConsumer bc = pushConsumer("CG_bcast_" + tag, MessageModel.BROADCASTING, "broadcast");
        DefaultLitePullConsumer lite = new DefaultLitePullConsumer("CG_lite_" + tag);
        lite.setNamesrvAddr(ns);
        apiTimeout(lite);
        lite.setInstanceName("lite-" + ProcessHandle.current().pid());
        lite.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        lite.subscribe(topic, "*");
        lite.start();
        List<Map<String, Object>> liteGot = bucket("lite_pull");
        long deadline = System.currentTimeMillis() + 90000;
        while (!ids(liteGot).containsAll(expected) && System.currentTimeMillis() < deadline) {
            for (MessageExt m : lite.poll(1000)) liteGot.add(recv(m));
        }
        waitFor(expected, "push", deadline);
        waitFor(expected, "broadcast", deadline);
        quiesce();
        lite.commitSync();
        lite.shutdown();
        push.shutdown();
        bc.shutdown();
    }

    static DefaultMQPushConsumer pushConsumer(String group, MessageModel model, String name) throws Exception {
        DefaultMQPushConsumer c = new DefaultMQPushConsumer(group, hook(), new AllocateMessageQueueAveragely(),
                msgTrace(), null);
        c.setNamesrvAddr(ns);
        apiTimeout(c);
        c.setInstanceName(name + "-" + ProcessHandle.current().pid());
        c.setMessageModel(model);
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.setConsumeThreadMin(2);
        c.setConsumeThreadMax(2);
        c.subscribe(topic, "*");
        List<Map<String, Object>> got = bucket(name);
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            for (MessageExt m : msgs) got.add(recv(m));
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        return startPush(c);
    }

    static DefaultMQPushConsumer startPush(DefaultMQPushConsumer c) throws Exception {
        c.start();
        return c;
    }

    static List<Map<String, Object>> bucket(String name) {
        List<Map<String, Object>> l = Collections.synchronizedList(new ArrayList<>());
        received.put(name, l);
        return l;
    }

    /** Messages are matched by their kind:idx user properties: the consumer-visible UNIQ_KEY of a
     *  batch member is the batch's own UNIQ_KEY (the broker appends the batch properties). */
    static String label(Map<String, Object> e) {
        Object kind = e.get("kind");
        if (e.containsKey("user_properties")) kind = ((Map<?, ?>) e.get("user_properties")).get("kind");
        Object idx = e.containsKey("user_properties") ? ((Map<?, ?>) e.get("user_properties")).get("idx") : e.get("idx");
        return kind + ":" + idx;
    }

    static Set<String> expectedIds() {
        Set<String> s = ConcurrentHashMap.newKeySet();
        synchronized (sent) {
            for (Map<String, Object> e : sent) s.add(label(e));
        }
        return s;
    }

    static Set<String> ids(List<Map<String, Object>> l) {
        Set<String> s = ConcurrentHashMap.newKeySet();
        synchronized (l) {
            for (Map<String, Object> e : l) s.add(label(e));
        }
        return s;
    }

    static void waitFor(Set<String> expected, String name, long deadline) throws Exception {
        List<Map<String, Object>> got = received.get(name);
        while (!ids(got).containsAll(expected)) {
            if (System.currentTimeMillis() > deadline) {
                Set<String> missing = ConcurrentHashMap.newKeySet();
                missing.addAll(expected);
                missing.removeAll(ids(got));
                throw new IllegalStateException(name + " consumer missed " + missing.size() + " messages: " + missing);
            }
            if (System.currentTimeMillis() / 100 % 50 == 0) {
                System.out.println("waiting for " + name + ": have " + ids(got).size() + " of " + expected.size());
            }
            Thread.sleep(100);
        }
    }

    /** Let in-flight pulls/acks settle so what was pulled is also what the listener saw. */
    static void quiesce() throws Exception {
        int last = -1;
        while (true) {
            int now = 0;
            for (List<Map<String, Object>> l : received.values()) now += l.size();
            if (now == last) return;
            last = now;
            Thread.sleep(1500);
        }
    }

    static Map<String, Object> recv(MessageExt m) {
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("msg_id", m.getMsgId());
        e.put("offset_msg_id", m instanceof MessageClientExt ? ((MessageClientExt) m).getOffsetMsgId() : null);
        e.put("topic", m.getTopic());
        e.put("queue_id", m.getQueueId());
        e.put("queue_offset", m.getQueueOffset());
        e.put("tags", m.getTags());
        e.put("keys", m.getKeys());
        e.put("body_len", m.getBody() == null ? 0 : m.getBody().length);
        e.put("body_sha256", Json.sha256(m.getBody()));
        e.put("reconsume_times", m.getReconsumeTimes());
        e.put("kind", m.getUserProperty("kind"));
        e.put("idx", m.getUserProperty("idx"));
        String ck = m.getProperty(MessageConst.PROPERTY_POP_CK);
        if (ck != null) e.put("pop_ck", ck);
        return e;
    }

    static void pop() throws Exception {
        DefaultMQProducer p = producer("PG_" + tag);
        for (int i = 0; i < N; i++) {
            Message m = msg(topic, "TagPop", "pop-" + i, body("pop", i), "pop", i);
            sent.add(record(m, "sync", p.send(m), 0));
        }
        count("sync", N);
        p.shutdown();
        DefaultMQPushConsumer c = new DefaultMQPushConsumer("CG_pop", hook());
        c.setNamesrvAddr(ns);
        apiTimeout(c);
        c.setInstanceName("pop-" + ProcessHandle.current().pid());
        c.setClientRebalance(false); // ask the broker for the assignment: POP mode (setConsumeMode)
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.setConsumeThreadMin(2);
        c.setConsumeThreadMax(2);
        c.subscribe(topic, "*");
        List<Map<String, Object>> got = bucket("pop");
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            for (MessageExt m : msgs) got.add(recv(m));
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        waitFor(expectedIds(), "pop", System.currentTimeMillis() + 90000);
        quiesce();
        c.shutdown();
    }

    static void transaction() throws Exception {
        Map<String, Integer> checks = new ConcurrentHashMap<>();
        Map<String, String> plan = new ConcurrentHashMap<>();
        Map<String, String> labels = new ConcurrentHashMap<>();
        Map<String, Integer> checkAnswers = new ConcurrentHashMap<>();
        TransactionMQProducer tp = new TransactionMQProducer("PG_" + tag, hook(), msgTrace(), null);
        tp.setNamesrvAddr(ns);
        apiTimeout(tp);
        tp.setSendMsgTimeout(15000);
        tp.setInstanceName("tx-" + ProcessHandle.current().pid());
        tp.setTransactionListener(new TransactionListener() {
            public LocalTransactionState executeLocalTransaction(Message m, Object arg) {
                return LocalTransactionState.valueOf((String) arg);
            }
            public LocalTransactionState checkLocalTransaction(MessageExt m) {
                // UNKNOW resolves to COMMIT on check-back; the others answer what they decided.
                String id = m.getProperty(MessageConst.PROPERTY_UNIQ_CLIENT_MESSAGE_ID_KEYIDX);
                checks.merge(id, 1, Integer::sum);
                String planned = plan.getOrDefault(id, "UNKNOW");
                String answer = planned.equals("ROLLBACK_MESSAGE") ? "ROLLBACK_MESSAGE" : "COMMIT_MESSAGE";
                checkAnswers.merge(id + " " + answer, 1, Integer::sum);
                return LocalTransactionState.valueOf(answer);
            }
        });
        tp.start();
        String[] states = {"UNKNOW", "UNKNOW", "UNKNOW", "COMMIT_MESSAGE", "ROLLBACK_MESSAGE"};
        for (int i = 0; i < states.length; i++) {
            Message m = msg(topic, "TagTx", "tx-" + i, body("tx-" + states[i], i), "transaction", i);
            SendResult r = tp.sendMessageInTransaction(m, states[i]);
            Map<String, Object> e = record(m, "transaction", r, 0);
            e.put("planned_state", states[i]);
            sent.add(e);
            plan.put((String) e.get("msg_id"), states[i]);
            labels.put((String) e.get("msg_id"), label(e));
        }
        count("transaction_half", states.length);
        count("end_transaction", states.length);
        long deadline = System.currentTimeMillis() + 90000;
        while (true) {
            boolean all = true;
            for (Map.Entry<String, String> e : plan.entrySet()) {
                if (e.getValue().equals("UNKNOW") && !checks.containsKey(e.getKey())) all = false;
            }
            if (all) break;
            if (System.currentTimeMillis() > deadline) throw new IllegalStateException("no check-back: " + checks);
            Thread.sleep(200);
        }
        Set<String> committed = ConcurrentHashMap.newKeySet();
        for (Map.Entry<String, String> e : plan.entrySet()) {
            if (!e.getValue().equals("ROLLBACK_MESSAGE")) committed.add(labels.get(e.getKey()));
        }
        DefaultMQPushConsumer c = pushConsumer("CG_" + tag, MessageModel.CLUSTERING, "push");
        waitFor(committed, "push", System.currentTimeMillis() + 90000);
        quiesce();
        c.shutdown();
        tp.shutdown();
        truth.put("checks", new TreeMap<>(checks));
        truth.put("check_answers", new TreeMap<>(checkAnswers));
        int nChecks = 0;
        for (int v : checks.values()) nChecks += v;
        count("check_transaction_state", nChecks);
        count("end_transaction_from_check", nChecks);
        List<String> committedIds = new ArrayList<>();
        for (Map.Entry<String, String> e : plan.entrySet()) {
            if (!e.getValue().equals("ROLLBACK_MESSAGE")) committedIds.add(e.getKey());
        }
        Collections.sort(committedIds);
        truth.put("committed_ids", committedIds);
    }
}
