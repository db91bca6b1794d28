import java.security.MessageDigest;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;

/**
 * Reads every message of a topic from the beginning with a real lite pull consumer (assign mode)
 * and prints one JSON line per message: msgId, tags, keys, queueId, offset, body_sha256.
 *
 * Usage: ReplayConsumer NAMESRV TOPIC GROUP EXPECTED TIMEOUT_MS
 * Stops after EXPECTED messages or TIMEOUT_MS; used by tests/test_replay_rocketmq.py.
 * A stored message is printed once even when the consumer delivers it again: seekToBegin
 * can race with a pull already in flight, which hands the same queue offsets over twice.
 */
class ReplayConsumer {
    public static void main(String[] a) {
        try {
            run(a);
        } catch (Throwable t) {  // never leave the JVM hanging on the client's own threads
            t.printStackTrace();
            System.exit(1);
        }
    }

    /** seekToBegin asks the broker for the queue's minimum offset; a connection lost meanwhile
     *  (seen on a loaded 2-core CI machine) is worth a retry, not a failed test. */
    static void seekToBegin(DefaultLitePullConsumer c, MessageQueue mq) throws Exception {
        for (int attempt = 1; ; attempt++) {
            try {
                c.seekToBegin(mq);
                return;
            } catch (org.apache.rocketmq.client.exception.MQClientException e) {
                if (attempt == 5) throw e;
                System.err.println("seekToBegin " + mq + " failed (attempt " + attempt + "): " + e);
                Thread.sleep(500);
            }
        }
    }

    static void run(String[] a) throws Exception {
        String ns = a[0], topic = a[1], group = a[2];
        int expected = Integer.parseInt(a[3]);
        long deadline = System.currentTimeMillis() + Long.parseLong(a[4]);
        DefaultLitePullConsumer c = new DefaultLitePullConsumer(group);
        c.setNamesrvAddr(ns);
        c.setInstanceName("replay-consumer-" + ProcessHandle.current().pid());
        c.setAutoCommit(false);
        c.start();
        Collection<MessageQueue> mqs = c.fetchMessageQueues(topic);
        c.assign(mqs);
        for (MessageQueue mq : mqs) seekToBegin(c, mq);
        Set<String> seen = new HashSet<>();
        int n = 0;
        while (n < expected && System.currentTimeMillis() < deadline) {
            List<MessageExt> got = c.poll(1000);
            for (MessageExt m : got) {
                if (!seen.add(m.getBrokerName() + "/" + m.getQueueId() + "/" + m.getQueueOffset())) continue;
                n++;
                System.out.println("{\"msgId\":" + q(m.getMsgId()) + ",\"tags\":" + q(m.getTags())
                    + ",\"keys\":" + q(m.getKeys()) + ",\"queueId\":" + m.getQueueId()
                    + ",\"offset\":" + m.getQueueOffset() + ",\"body_sha256\":" + q(sha(m.getBody())) + "}");
            }
        }
        System.out.flush();
        c.shutdown();
        System.exit(0);
    }

    static String sha(byte[] b) throws Exception {
        StringBuilder s = new StringBuilder();
        for (byte x : MessageDigest.getInstance("SHA-256").digest(b)) s.append(String.format("%02x", x));
        return s.toString();
    }

    static String q(String s) {
        if (s == null) return "null";
        StringBuilder o = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            if (ch == '"' || ch == '\\') o.append('\\').append(ch);
            else if (ch < 0x20) o.append(String.format("\\u%04x", (int) ch));
            else o.append(ch);
        }
        return o.append('"').toString();
    }
}
