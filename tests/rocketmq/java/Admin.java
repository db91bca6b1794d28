import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.message.MessageRequestMode;
import org.apache.rocketmq.remoting.protocol.body.ClusterInfo;
import org.apache.rocketmq.remoting.protocol.route.BrokerData;
import org.apache.rocketmq.remoting.protocol.subscription.SubscriptionGroupConfig;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

/**
 * Batched admin operations in one JVM (mqadmin starts a JVM per command).
 *
 * Usage: Admin NAMESRV CLUSTER OP...
 *   wait=MS                 poll clusterList until a master broker of CLUSTER is registered
 *   status                  print "broker NAME ADDR" lines for CLUSTER
 *   topic=NAME[:TYPE]       create a topic (4 queues); TYPE is NORMAL/FIFO/DELAY/TRANSACTION
 *   group=NAME[:orderly]    create a subscription group
 *   pop=TOPIC:GROUP         switch GROUP on TOPIC to POP consumption
 */
public class Admin {
    public static void main(String[] args) throws Exception {
        String ns = args[0], cluster = args[1];
        DefaultMQAdminExt admin = new DefaultMQAdminExt(5000);
        admin.setNamesrvAddr(ns);
        admin.setInstanceName("rmqsniff-admin-" + ProcessHandle.current().pid());
        admin.start();
        int rc = 0;
        try {
            List<String> brokers = new ArrayList<>();
            for (int i = 2; i < args.length; i++) {
                String op = args[i];
                String key = op.contains("=") ? op.substring(0, op.indexOf('=')) : op;
                String val = op.contains("=") ? op.substring(op.indexOf('=') + 1) : "";
                switch (key) {
                    case "wait": {
                        long deadline = System.currentTimeMillis() + Long.parseLong(val);
                        String last = "";
                        while (true) {
                            try {
                                brokers = masters(admin, cluster);
                                if (!brokers.isEmpty()) break;
                                last = "no broker registered in " + cluster;
                            } catch (Exception e) {
                                last = e.toString();
                            }
                            if (System.currentTimeMillis() > deadline) {
                                System.out.println("TIMEOUT " + last);
                                System.exit(3);
                            }
                            Thread.sleep(300);
                        }
                        System.out.println("READY " + String.join(",", brokers));
                        break;
                    }
                    case "status": {
                        ClusterInfo ci = admin.examineBrokerClusterInfo();
                        for (Map.Entry<String, BrokerData> e : ci.getBrokerAddrTable().entrySet()) {
                            System.out.println("broker " + e.getKey() + " " + e.getValue().getBrokerAddrs());
                        }
                        break;
                    }
                    case "topic": {
                        String[] p = val.split(":");
                        TopicConfig tc = new TopicConfig(p[0], 4, 4, 6);
                        if (p.length > 1) {
                            Map<String, String> attrs = new HashMap<>();
                            attrs.put("+message.type", p[1]);
                            tc.setAttributes(attrs);
                        }
                        for (String b : need(admin, cluster, brokers)) admin.createAndUpdateTopicConfig(b, tc);
                        System.out.println("TOPIC " + val);
                        break;
                    }
                    case "group": {
                        String[] p = val.split(":");
                        SubscriptionGroupConfig g = new SubscriptionGroupConfig();
                        g.setGroupName(p[0]);
                        g.setConsumeMessageOrderly(p.length > 1 && p[1].equals("orderly"));
                        for (String b : need(admin, cluster, brokers)) admin.createAndUpdateSubscriptionGroupConfig(b, g);
                        System.out.println("GROUP " + val);
                        break;
                    }
                    case "pop": {
                        String[] p = val.split(":");
                        for (String b : need(admin, cluster, brokers)) {
                            admin.setMessageRequestMode(b, p[0], p[1], MessageRequestMode.POP, 4, 5000);
                        }
                        System.out.println("POP " + val);
                        break;
                    }
                    default:
                        System.out.println("unknown op " + op);
                        rc = 2;
                }
            }
        } finally {
            admin.shutdown();
        }
        System.exit(rc);
    }

    private static List<String> need(DefaultMQAdminExt admin, String cluster, List<String> known) throws Exception {
        if (!known.isEmpty()) return known;
        List<String> b = masters(admin, cluster);
        if (b.isEmpty()) throw new IllegalStateException("no master broker in cluster " + cluster);
        known.addAll(b);
        return known;
    }

    private static List<String> masters(DefaultMQAdminExt admin, String cluster) throws Exception {
        ClusterInfo ci = admin.examineBrokerClusterInfo();
        List<String> out = new ArrayList<>();
        Set<String> names = ci.getClusterAddrTable() == null ? null : ci.getClusterAddrTable().get(cluster);
        if (names == null) return out;
        for (String n : names) {
            BrokerData bd = ci.getBrokerAddrTable().get(n);
            if (bd != null && bd.getBrokerAddrs().get(0L) != null) out.add(bd.getBrokerAddrs().get(0L));
        }
        return out;
    }
}
