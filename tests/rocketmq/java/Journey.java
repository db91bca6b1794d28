import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.client.consumer.rebalance.AllocateMessageQueueAveragely;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.common.message.MessageClientExt;
import org.apache.rocketmq.common.message.MessageClientIDSetter;
import org.apache.rocketmq.common.message.MessageConst;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;

/**
 * The journey scenario: where each message went, as the clients saw it.
 *
 * A push consumer starts, then a producer sends {@link #N} keyed sync messages, the first
 * SLOW_FROM {@link #PACE_MS} apart, the rest at once (every 4th from 0 with a W3C
 * {@code traceparent} user property, every 4th from 2 with a SkyWalking v3 {@code sw8}); the consumer (group
 * CG_journey, maxReconsumeTimes 2, retry delay level 1 = 1 s, one consume thread) answers
 * RECONSUME_LATER on the first attempt of the RETRY ones (redelivered from %RETRY%GROUP), always
 * on DLQ_IDX (dead-lettered to %DLQ%GROUP after 3 attempts), and sleeps {@link #SLOW_MS} on the
 * first attempt of the SLOW burst so lag builds and drains. After everything is consumed the
 * consumer is shut down (it commits its offsets) and {@link #TAIL} more messages are sent: nobody
 * consumes them, so the group's lag at the end is non-zero (TAIL >= 4: every queue's last offset
 * is in a send answer). A lite pull consumer reads the
 * dead-lettered message back from %DLQ%GROUP.
 *
 * Truth: "messages" (per message: ids, queue, offset, trace context, every consume attempt, the
 * DLQ copy), "phases" (wall-clock ms of each phase), "group", "dlq_topic", "retry_topic".
 */
final class Journey {
    static final int N = 40;
    static final int TAIL = 6;
    static final int DLQ_IDX = 6;
    static final Set<Integer> RETRY = Set.of(3, 11, 19, 27, 35);
    static final int SLOW_FROM = 20, SLOW_TO = 29;
    static final long SLOW_MS = 1500;
    static final long PACE_MS = 200;
    static final int MAX_RECONSUME = 2;
    static final SecureRandom RND = new SecureRandom();

    private Journey() {
    }

    static String plan(int i) {
        if (i == DLQ_IDX) return "dlq";
        if (RETRY.contains(i)) return "retry_once";
        if (i >= SLOW_FROM && i <= SLOW_TO) return "slow";
        return "ok";
    }

    static String hex(int bytes) {
        byte[] b = new byte[bytes];
        RND.nextBytes(b);
        StringBuilder sb = new StringBuilder();
        for (byte x : b) sb.append(String.format("%02x", x));
        return sb.toString();
    }

    static String b64(String s) {
        return Base64.getEncoder().encodeToString(s.getBytes(StandardCharsets.UTF_8));
    }

    /** Sets a trace-context user property on message i (or none) and returns what was set. */
    static Map<String, Object> traceContext(Message m, int i) {
        Map<String, Object> t = new LinkedHashMap<>();
        if (i % 4 == 0) {
            String traceId = hex(16), spanId = hex(8);
            String header = "00-" + traceId + "-" + spanId + "-01";
            m.putUserProperty("traceparent", header);
            t.put("format", "w3c");
            t.put("property", "traceparent");
            t.put("header", header);
            t.put("trace_id", traceId);
            t.put("span_id", spanId);
            t.put("sampled", true);
        } else if (i % 4 == 2) {
            String traceId = hex(16) + "." + (1000 + i) + "." + System.currentTimeMillis();
            String segmentId = hex(16) + "." + (2000 + i);
            int spanId = i % 3;
            String service = "journey-producer", instance = "instance-" + i + "@rmqsniff";
            String endpoint = "/journey/send/" + i, target = "127.0.0.1:10911";
            String header = "1-" + b64(traceId) + "-" + b64(segmentId) + "-" + spanId + "-" + b64(service)
                    + "-" + b64(instance) + "-" + b64(endpoint) + "-" + b64(target);
            m.putUserProperty("sw8", header);
            t.put("format", "sw8");
            t.put("property", "sw8");
            t.put("header", header);
            t.put("sampled", true);
            t.put("trace_id", traceId);
            t.put("segment_id", segmentId);
            t.put("span_id", spanId);
            t.put("service", service);
            t.put("instance", instance);
            t.put("endpoint", endpoint);
            t.put("target", target);
        } else {
            return null;
        }
        return t;
    }

    static void run(boolean msgTrace) throws Exception {
        String topic = RemotingScenario.topic;
        String group = "CG_journey" + (msgTrace ? "_trace" : "");
        String retryTopic = "%RETRY%" + group, dlqTopic = "%DLQ%" + group;
        Map<String, Object> truth = RemotingScenario.truth;
        truth.put("group", group);
        truth.put("retry_topic", retryTopic);
        truth.put("dlq_topic", dlqTopic);
        truth.put("msg_trace", msgTrace);
        truth.put("max_reconsume_times", MAX_RECONSUME);
        Map<String, Object> phases = new LinkedHashMap<>();
        truth.put("phases", phases);
        Map<String, Map<String, Object>> byId = new ConcurrentHashMap<>();
        List<Map<String, Object>> messages = Collections.synchronizedList(new ArrayList<>());

        DefaultMQPushConsumer c = new DefaultMQPushConsumer(group, RemotingScenario.hook(),
                new AllocateMessageQueueAveragely(), msgTrace, null);
        c.setNamesrvAddr(RemotingScenario.ns);
        RemotingScenario.apiTimeout(c);
        c.setInstanceName("journey-" + ProcessHandle.current().pid());
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        c.setConsumeThreadMin(1);
        c.setConsumeThreadMax(1);
        c.setMaxReconsumeTimes(MAX_RECONSUME);
        c.setPersistConsumerOffsetInterval(1000);
        c.subscribe(topic, "*");
        Set<String> done = ConcurrentHashMap.newKeySet(); // consumed OK, or failed for the last time
        Set<String> foreign = ConcurrentHashMap.newKeySet();
        List<Map<String, Object>> got = RemotingScenario.bucket("journey");
        long[] slow = {0, 0};
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            MessageExt m = msgs.get(0);
            if (m.getUserProperty("idx") == null) {
                foreign.add(m.getMsgId());
                return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
            }
            long ts = System.currentTimeMillis();
            int i = Integer.parseInt(m.getUserProperty("idx"));
            String plan = plan(i);
            if (plan.equals("slow") && m.getReconsumeTimes() == 0) {
                synchronized (slow) {
                    if (slow[0] == 0) slow[0] = ts;
                }
                try {
                    Thread.sleep(SLOW_MS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                synchronized (slow) {
                    slow[1] = System.currentTimeMillis();
                }
            }
            boolean fail = plan.equals("dlq") || (plan.equals("retry_once") && m.getReconsumeTimes() == 0);
            ctx.setDelayLevelWhenNextConsume(1); // 1 s instead of 10 s, 30 s...
            Map<String, Object> a = new LinkedHashMap<>();
            a.put("ts_ms", ts);
            a.put("reconsume_times", m.getReconsumeTimes());
            a.put("topic", ctx.getMessageQueue().getTopic());
            a.put("broker", ctx.getMessageQueue().getBrokerName());
            a.put("queue_id", ctx.getMessageQueue().getQueueId());
            a.put("queue_offset", m.getQueueOffset());
            a.put("offset_msg_id", m instanceof MessageClientExt ? ((MessageClientExt) m).getOffsetMsgId() : null);
            a.put("origin_msg_id", m.getProperty(MessageConst.PROPERTY_ORIGIN_MESSAGE_ID));
            a.put("result", fail ? "RECONSUME_LATER" : "CONSUME_SUCCESS");
            a.put("done_ms", System.currentTimeMillis());
            Map<String, Object> rec = byId.get(m.getMsgId());
            if (rec == null) { // left on the topic by an earlier run against the same cluster
                foreign.add(m.getMsgId());
                return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
            }
            @SuppressWarnings("unchecked")
            List<Map<String, Object>> attempts = (List<Map<String, Object>>) rec.get("attempts");
            attempts.add(a);
            Map<String, Object> r = RemotingScenario.recv(m);
            r.put("topic", ctx.getMessageQueue().getTopic()); // the client shows a retry under its own topic
            got.add(r);
            if (!fail || m.getReconsumeTimes() >= MAX_RECONSUME) done.add(m.getMsgId());
            return fail ? ConsumeConcurrentlyStatus.RECONSUME_LATER : ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });

        DefaultMQProducer p = new DefaultMQProducer("PG_" + RemotingScenario.tag, RemotingScenario.hook(),
                msgTrace, null);
        p.setNamesrvAddr(RemotingScenario.ns);
        RemotingScenario.apiTimeout(p);
        p.setSendMsgTimeout(15000);
        p.setRetryTimesWhenSendFailed(0);
        p.setInstanceName("journey-producer-" + ProcessHandle.current().pid());
        p.start();
        c.start();
        phases.put("consumer_start_ms", System.currentTimeMillis());
        Thread.sleep(3000); // the consumer owns the queues (rebalance) before the first send
        phases.put("produce_start_ms", System.currentTimeMillis());
        for (int i = 0; i < N; i++) {
            send(p, topic, "journey", i, byId, messages, plan(i));
            if (i < SLOW_FROM) Thread.sleep(PACE_MS); // the consumer keeps up until the burst
        }
        phases.put("produce_end_ms", System.currentTimeMillis());
        long deadline = System.currentTimeMillis() + 150000;
        while (done.size() < N) {
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("journey consumer finished only " + done.size() + " of " + N);
            }
            Thread.sleep(200);
        }
        phases.put("slow_start_ms", slow[0]);
        phases.put("slow_end_ms", slow[1]);
        phases.put("drained_ms", System.currentTimeMillis());
        Thread.sleep(4000); // offsets committed (persist interval 1 s, pulls carry commitOffset)
        c.shutdown(); // persists the offsets once more, unregisters
        phases.put("consumer_stopped_ms", System.currentTimeMillis());
        for (int i = 0; i < TAIL; i++) {
            send(p, topic, "tail", N + i, byId, messages, "unconsumed");
        }
        phases.put("tail_sent_ms", System.currentTimeMillis());
        p.shutdown();
        Map<String, Object> dlq = readDlq(dlqTopic, group, byId);
        phases.put("dlq_read_ms", System.currentTimeMillis());
        for (Map<String, Object> rec : messages) {
            rec.put("dead_lettered", dlq.containsKey(rec.get("msg_id")));
            if (dlq.containsKey(rec.get("msg_id"))) rec.put("dlq", dlq.get(rec.get("msg_id")));
        }
        truth.put("messages", messages);
        truth.put("foreign_messages_consumed", new ArrayList<>(foreign));
        int attempts = 0, retried = 0;
        for (Map<String, Object> rec : messages) {
            List<?> l = (List<?>) rec.get("attempts");
            attempts += l.size();
            for (Object o : l) if (((Integer) ((Map<?, ?>) o).get("reconsume_times")) > 0) retried++;
        }
        RemotingScenario.count("sync", N + TAIL);
        RemotingScenario.count("consume_attempts", attempts);
        RemotingScenario.count("retry_deliveries", retried);
        RemotingScenario.count("dead_lettered", dlq.size());
        for (Map<String, Object> rec : messages) RemotingScenario.sent.add(rec);
    }

    static void send(DefaultMQProducer p, String topic, String kind, int i, Map<String, Map<String, Object>> byId,
                     List<Map<String, Object>> messages, String plan) throws Exception {
        Message m = RemotingScenario.msg(topic, kind.equals("tail") ? "TagTail" : "TagJourney", kind + "-" + i,
                RemotingScenario.body(kind, i), kind, i);
        Map<String, Object> trace = traceContext(m, i);
        // the id before the send (the producer keeps it): the consumer may get it before send() returns
        MessageClientIDSetter.setUniqID(m);
        Map<String, Object> rec = Collections.synchronizedMap(new LinkedHashMap<>());
        rec.put("attempts", Collections.synchronizedList(new ArrayList<>()));
        byId.put(MessageClientIDSetter.getUniqID(m), rec);
        long born = System.currentTimeMillis();
        SendResult r = p.send(m);
        Map<String, Object> full = RemotingScenario.record(m, kind, r, 0);
        full.put("idx", i);
        full.put("plan", plan);
        full.put("send_ms", born);
        full.put("trace", trace);
        full.put("attempts", rec.get("attempts"));
        rec.putAll(full);
        messages.add(full);
    }

    /** Reads %DLQ%GROUP back with a lite pull consumer: unique key -> where the DLQ copy is. */
    static Map<String, Object> readDlq(String dlqTopic, String group, Map<String, Map<String, Object>> byId)
            throws Exception {
        Set<String> want = new HashSet<>();
        for (Map<String, Object> rec : byId.values()) if ("dlq".equals(rec.get("plan"))) want.add((String) rec.get("msg_id"));
        Map<String, Object> found = new TreeMap<>();
        List<Map<String, Object>> got = RemotingScenario.bucket("dlq_reader");
        DefaultLitePullConsumer lite = new DefaultLitePullConsumer("CG_dlq_reader_" + group);
        lite.setNamesrvAddr(RemotingScenario.ns);
        RemotingScenario.apiTimeout(lite);
        lite.setInstanceName("dlq-reader-" + ProcessHandle.current().pid());
        lite.setAutoCommit(false);
        lite.start();
        try {
            long deadline = System.currentTimeMillis() + 60000;
            Collection<MessageQueue> mqs = null;
            while (mqs == null) {
                try {
                    mqs = lite.fetchMessageQueues(dlqTopic);
                } catch (Exception e) {
                    if (System.currentTimeMillis() > deadline) throw e;
                    Thread.sleep(500);
                }
            }
            lite.assign(mqs);
            for (MessageQueue mq : mqs) lite.seek(mq, 0);
            while (!found.keySet().containsAll(want)) {
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("not found in " + dlqTopic + ": " + want + " (have " + found.keySet() + ")");
                }
                for (MessageExt m : lite.poll(1000)) {
                    got.add(RemotingScenario.recv(m));
                    if (!byId.containsKey(m.getMsgId())) continue; // an earlier run's
                    Map<String, Object> d = new LinkedHashMap<>();
                    d.put("topic", dlqTopic);
                    d.put("queue_id", m.getQueueId());
                    d.put("queue_offset", m.getQueueOffset());
                    d.put("offset_msg_id", m instanceof MessageClientExt ? ((MessageClientExt) m).getOffsetMsgId() : null);
                    d.put("reconsume_times", m.getReconsumeTimes());
                    d.put("origin_msg_id", m.getProperty(MessageConst.PROPERTY_ORIGIN_MESSAGE_ID));
                    found.put(m.getMsgId(), d);
                }
            }
        } finally {
            lite.shutdown();
        }
        return found;
    }
}
