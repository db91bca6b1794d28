import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * A real producer and a real push consumer (PULL_MESSAGE, QUERY/UPDATE_CONSUMER_OFFSET) for
 * the offset replay test; one JSON line per message sent ("sent") or consumed ("recv").
 *
 * Usage: OffsetScenario MODE NAMESRV TOPIC GROUP N
 *   produce       N sync sends (group PG_offset)
 *   push          a clustering push consumer of GROUP (from the first offset, or the stored
 *                 one) until N messages arrived, then a quiet second and shutdown (offsets persisted)
 *   produce-push  both, in one client instance (sends and pulls share the broker connection)
 * Used by tests/test_replay_pull.py.
 */
class OffsetScenario {
    public static void main(String[] a) throws Exception {
        try {
            run(a[0], a[1], a[2], a[3], Integer.parseInt(a[4]));
        } catch (Throwable t) {
            t.printStackTrace();
            System.out.flush();
            Runtime.getRuntime().halt(1); // client threads are non-daemon: never hang on failure
        }
        System.out.flush();
        System.exit(0);
    }

    static void run(String mode, String ns, String topic, String group, int n) throws Exception {
        String name = "offset-" + ProcessHandle.current().pid();
        if (mode.startsWith("produce")) {
            DefaultMQProducer p = new DefaultMQProducer("PG_offset");
            p.setNamesrvAddr(ns);
            p.setInstanceName(name);
            p.setSendMsgTimeout(15000);
            p.setRetryTimesWhenSendFailed(0);
            p.start();
            for (int i = 0; i < n; i++) {
                Message m = new Message(topic, "TagOffset", "offset-" + i,
                        ("offset message " + i).getBytes(StandardCharsets.UTF_8));
                SendResult r = p.send(m);
                System.out.println("{\"op\":\"sent\",\"msgId\":\"" + r.getMsgId() + "\",\"queueId\":"
                        + r.getMessageQueue().getQueueId() + ",\"offset\":" + r.getQueueOffset() + "}");
            }
            if (mode.equals("produce")) p.shutdown();
        }
        if (mode.endsWith("push")) {
            DefaultMQPushConsumer c = new DefaultMQPushConsumer(group);
            c.setNamesrvAddr(ns);
            c.setInstanceName(name);
            c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
            c.setPersistConsumerOffsetInterval(1000);
            c.setConsumeThreadMin(2);
            c.setConsumeThreadMax(2);
            c.subscribe(topic, "*");
            Set<String> got = ConcurrentHashMap.newKeySet();
            c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
                for (MessageExt m : msgs) {
                    if (got.add(m.getMsgId())) {
                        System.out.println("{\"op\":\"recv\",\"msgId\":\"" + m.getMsgId() + "\",\"queueId\":"
                                + m.getQueueId() + ",\"offset\":" + m.getQueueOffset() + "}");
                    }
                }
                return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
            });
            c.start();
            long started = System.currentTimeMillis();
            long deadline = started + 90000;
            while (got.size() < n) {
                if (System.currentTimeMillis() > deadline) throw new IllegalStateException("consumed " + got.size() + " of " + n);
                Thread.sleep(100);
            }
            // at least one periodic offset commit after the last message: the client's first periodic
            // persist comes 10 s after start (then every second); the commits sent at shutdown alone are
            // oneway and race the client's UNREGISTER_CLIENT (seen once: the broker kept one queue at 0)
            Thread.sleep(Math.max(2500, started + 12000 - System.currentTimeMillis()));
            c.shutdown();
        }
    }
}
