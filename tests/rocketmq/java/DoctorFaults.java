import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.LocalTransactionState;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.TransactionListener;
import org.apache.rocketmq.client.producer.TransactionMQProducer;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * Faults made by real clients for rmqsniff doctor's tests (tests/test_doctor_rocketmq.py).
 *
 * Usage: DoctorFaults MODE NAMESRV ARGS...
 *   missing-topic NAMESRV TOPIC             one send to TOPIC that the broker will not create
 *                                           (TOPIC_NOT_EXIST; see missingTopic), then one to a new
 *                                           topic that is auto-created as usual
 *   mixed-subscriptions NAMESRV TOPIC GROUP two push consumers of GROUP: one subscribes TagA, the other TagB
 *   transaction-unknown NAMESRV TOPIC MS    a transactional send whose producer answers UNKNOW to every
 *                                           check, for MS milliseconds
 *   rebalance-churn NAMESRV TOPIC GROUP N   a consumer of GROUP stays while another joins and leaves N times
 * Prints one line per outcome (SEND_FAILED ..., CHECKS n) for the test to compare with.
 */
public class DoctorFaults {
    public static void main(String[] a) throws Exception {
        String mode = a[0], ns = a[1];
        switch (mode) {
            case "missing-topic": missingTopic(ns, a[2]); break;
            case "mixed-subscriptions": mixedSubscriptions(ns, a[2], a[3]); break;
            case "transaction-unknown": transactionUnknown(ns, a[2], Long.parseLong(a[3])); break;
            case "rebalance-churn": rebalanceChurn(ns, a[2], a[3], Integer.parseInt(a[4])); break;
            default: throw new IllegalArgumentException(mode);
        }
        System.exit(0);
    }

    static String instance(String name) {
        return "doctor-" + name + "-" + ProcessHandle.current().pid();
    }

    /** One send to a topic nobody created, answered TOPIC_NOT_EXIST as a broker with
     *  autoCreateTopicEnable=false answers it.  The flag itself is not switched: a send for a missing
     *  topic while it is off makes the broker drop the inherit permission of TBW102 (the topic new
     *  ones are created from) for the rest of its life, so no later auto-created topic works on the
     *  cluster the other tests share.  Instead the producer's create-topic key is TopicTest, which
     *  exists without the inherit permission: the broker refuses to create the topic from it. */
    static void missingTopic(String ns, String topic) throws Exception {
        DefaultMQProducer p = new DefaultMQProducer("PG_doctor_missing");
        p.setNamesrvAddr(ns);
        p.setInstanceName(instance("missing"));
        p.setCreateTopicKey("TopicTest");
        p.start();
        try {
            SendResult r = p.send(new Message(topic, "TagA", "to nowhere".getBytes(StandardCharsets.UTF_8)));
            System.out.println("SENT " + r.getSendStatus());
        } catch (Exception e) {
            System.out.println("SEND_FAILED " + e.getClass().getSimpleName());
        }
        p.shutdown();
        DefaultMQProducer again = new DefaultMQProducer("PG_doctor_missing_again");
        again.setNamesrvAddr(ns);
        again.setInstanceName(instance("again"));
        again.start();
        try {  // topics are still auto-created (other tests share the cluster)
            SendResult r = again.send(new Message(topic + "Again", "TagA", "created".getBytes(StandardCharsets.UTF_8)));
            System.out.println("AUTO_CREATE_AGAIN " + r.getSendStatus());
        } finally {
            again.shutdown();
        }
    }

    static DefaultMQPushConsumer consumer(String ns, String group, String topic, String tags, String name)
            throws Exception {
        DefaultMQPushConsumer c = new DefaultMQPushConsumer(group);
        c.setNamesrvAddr(ns);
        c.setInstanceName(instance(name));
        c.subscribe(topic, tags);
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> ConsumeConcurrentlyStatus.CONSUME_SUCCESS);
        return c;
    }

    static void mixedSubscriptions(String ns, String topic, String group) throws Exception {
        DefaultMQPushConsumer a = consumer(ns, group, topic, "TagA", "a");
        DefaultMQPushConsumer b = consumer(ns, group, topic, "TagB", "b");
        a.start();
        b.start();
        Thread.sleep(6000);
        a.shutdown();
        b.shutdown();
        System.out.println("CONSUMERS " + a.getDefaultMQPushConsumerImpl().getmQClientFactory().getClientId()
                + " " + b.getDefaultMQPushConsumerImpl().getmQClientFactory().getClientId());
    }

    static void transactionUnknown(String ns, String topic, long ms) throws Exception {
        AtomicInteger checks = new AtomicInteger();
        TransactionMQProducer p = new TransactionMQProducer("PG_doctor_tx");
        p.setNamesrvAddr(ns);
        p.setInstanceName(instance("tx"));
        p.setTransactionListener(new TransactionListener() {
            @Override
            public LocalTransactionState executeLocalTransaction(Message m, Object arg) {
                return LocalTransactionState.UNKNOW;
            }

            @Override
            public LocalTransactionState checkLocalTransaction(MessageExt m) {
                checks.incrementAndGet();
                return LocalTransactionState.UNKNOW;
            }
        });
        p.start();
        SendResult r = p.sendMessageInTransaction(new Message(topic, "TagA", "undecided".getBytes(StandardCharsets.UTF_8)), null);
        System.out.println("HALF " + r.getMsgId());
        Thread.sleep(ms);
        p.shutdown();
        System.out.println("CHECKS " + checks.get());
    }

    static void rebalanceChurn(String ns, String topic, String group, int times) throws Exception {
        DefaultMQPushConsumer stays = consumer(ns, group, topic, "*", "stays");
        stays.start();
        for (int i = 0; i < times; i++) {
            DefaultMQPushConsumer c = consumer(ns, group, topic, "*", "churn" + i);
            c.start();
            Thread.sleep(1000);
            c.shutdown();
            Thread.sleep(500);
        }
        stays.shutdown();
        System.out.println("CHURNED " + times);
    }
}
