// Real remoting traffic from the Go client (github.com/apache/rocketmq-client-go/v2) with its
// own ground truth, in the same JSON shape as java/RemotingScenario.java.
//
// Usage: go-scenario NAMESRV TOPIC OUT_JSON
//
// Sends sync, async and oneway messages (tags, keys, user properties "kind" and "idx") with a
// producer, then consumes them with a clustering push consumer (ConsumeFromFirstOffset) and
// records what it received. The Go client sends SEND_MESSAGE (10) with long header keys and
// announces itself as language GO, version 317. Its "oneway" sends are ordinary requests (no
// RPC_ONEWAY flag), which the broker answers.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

const (
	clientModule = "github.com/apache/rocketmq-client-go/v2"
	nSync        = 10
	nAsync       = 5
	nOneway      = 2
)

type sent struct {
	Kind        string            `json:"kind"`
	MsgID       string            `json:"msg_id"`
	Topic       string            `json:"topic"`
	Tags        string            `json:"tags"`
	Keys        string            `json:"keys"`
	UserProps   map[string]string `json:"user_properties"`
	BodyLen     int               `json:"body_len"`
	BodySHA256  string            `json:"body_sha256"`
	OffsetMsgID *string           `json:"offset_msg_id,omitempty"`
	QueueID     *int              `json:"queue_id,omitempty"`
	QueueOffset *int64            `json:"queue_offset,omitempty"`
	SendStatus  string            `json:"send_status,omitempty"`
	ResultMsgID string            `json:"result_msg_id,omitempty"`
}

type recv struct {
	MsgID          string `json:"msg_id"`
	OffsetMsgID    string `json:"offset_msg_id"`
	Topic          string `json:"topic"`
	QueueID        int    `json:"queue_id"`
	QueueOffset    int64  `json:"queue_offset"`
	Tags           string `json:"tags"`
	Keys           string `json:"keys"`
	BodyLen        int    `json:"body_len"`
	BodySHA256     string `json:"body_sha256"`
	ReconsumeTimes int32  `json:"reconsume_times"`
	Kind           string `json:"kind"`
	Idx            string `json:"idx"`
}

type truth struct {
	ScenarioMode   string            `json:"scenario_mode"`
	Client         string            `json:"client"`
	ClientLanguage string            `json:"client_language"`
	ClientVersion  int               `json:"client_version_code"`
	SendCode       int               `json:"send_request_code"`
	OnewayFlag     bool              `json:"oneway_flag"`
	Protocol       string            `json:"protocol"`
	SerializeType  string            `json:"serialize_type"`
	Namesrv        string            `json:"namesrv"`
	Topic          string            `json:"topic"`
	Counts         map[string]int    `json:"counts"`
	Sent           []*sent           `json:"sent"`
	Received       map[string][]recv `json:"received"`
	ElapsedMs      int64             `json:"elapsed_ms"`
}

var (
	mu       sync.Mutex
	received []recv
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", a...)
	os.Exit(1)
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func clientVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == clientModule {
				return d.Version
			}
		}
	}
	return "unknown"
}

func newMsg(topic, kind string, i int) (*primitive.Message, *sent) {
	body := []byte(fmt.Sprintf("%s message %d from rmqsniff (go)", kind, i))
	tags := "Tag" + string(kind[0]-32) + kind[1:]
	keys := fmt.Sprintf("go-%s-%d", kind, i)
	m := primitive.NewMessage(topic, body)
	m.WithTag(tags)
	m.WithKeys([]string{keys})
	m.WithProperty("kind", kind)
	m.WithProperty("idx", strconv.Itoa(i))
	return m, &sent{Kind: kind, Topic: topic, Tags: tags, Keys: keys,
		UserProps: map[string]string{"kind": kind, "idx": strconv.Itoa(i)},
		BodyLen:   len(body), BodySHA256: digest(body)}
}

func fill(s *sent, m *primitive.Message, r *primitive.SendResult) {
	s.MsgID = m.GetProperty(primitive.PropertyUniqueClientMessageIdKeyIndex)
	if r == nil {
		return
	}
	q, off, id := r.MessageQueue.QueueId, r.QueueOffset, r.OffsetMsgID
	s.OffsetMsgID, s.QueueID, s.QueueOffset = &id, &q, &off
	s.SendStatus = map[primitive.SendStatus]string{primitive.SendOK: "SEND_OK"}[r.Status]
	if s.SendStatus == "" {
		s.SendStatus = fmt.Sprintf("status %d", r.Status)
	}
	s.ResultMsgID = r.MsgID
}

func label(kind, idx string) string { return kind + ":" + idx }

func have() map[string]bool {
	mu.Lock()
	defer mu.Unlock()
	out := map[string]bool{}
	for _, r := range received {
		out[label(r.Kind, r.Idx)] = true
	}
	return out
}

// withTimeout runs f (a client shutdown) but never lets it hang the program.
func withTimeout(what string, d time.Duration, f func() error) {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			die("%s: %v", what, err)
		}
	case <-time.After(d):
		die("%s did not finish within %s", what, d)
	}
}

func main() {
	if len(os.Args) != 4 {
		die("usage: go-scenario NAMESRV TOPIC OUT_JSON")
	}
	ns, topic, out := os.Args[1], os.Args[2], os.Args[3]
	rlog.SetLogLevel("error")
	t0 := time.Now()
	pid := os.Getpid()
	resolver := primitive.NewPassthroughResolver([]string{ns})
	ctx := context.Background()
	counts := map[string]int{}
	var all []*sent

	p, err := rocketmq.NewProducer(
		producer.WithNsResolver(resolver),
		producer.WithGroupName("PG_"+topic),
		producer.WithInstanceName(fmt.Sprintf("go-producer-%d", pid)),
		producer.WithRetry(0),
		producer.WithVIPChannel(false),
		producer.WithSendMsgTimeout(15*time.Second),
	)
	if err != nil {
		die("new producer: %v", err)
	}
	if err := p.Start(); err != nil {
		die("producer start: %v", err)
	}
	for i := 0; i < nSync; i++ {
		m, s := newMsg(topic, "sync", i)
		r, err := p.SendSync(ctx, m)
		if err != nil {
			die("sync send %d: %v", i, err)
		}
		if r.Status != primitive.SendOK {
			die("sync send %d: %s", i, r)
		}
		fill(s, m, r)
		all = append(all, s)
	}
	counts["sync"] = nSync

	var wg sync.WaitGroup
	var amu sync.Mutex
	var asyncErrs []string
	for i := 0; i < nAsync; i++ {
		m, s := newMsg(topic, "async", i)
		wg.Add(1)
		err := p.SendAsync(ctx, func(_ context.Context, r *primitive.SendResult, err error) {
			defer wg.Done()
			amu.Lock()
			defer amu.Unlock()
			if err != nil || r == nil || r.Status != primitive.SendOK {
				asyncErrs = append(asyncErrs, fmt.Sprintf("async %d: %v %v", i, r, err))
				return
			}
			fill(s, m, r)
			all = append(all, s)
		}, m)
		if err != nil {
			die("async send %d: %v", i, err)
		}
	}
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(60 * time.Second):
		die("async sends not answered within 60s")
	}
	if len(asyncErrs) > 0 {
		die("async: %v", asyncErrs)
	}
	counts["async"] = nAsync

	for i := 0; i < nOneway; i++ {
		m, s := newMsg(topic, "oneway", i)
		if err := p.SendOneWay(ctx, m); err != nil {
			die("oneway send %d: %v", i, err)
		}
		fill(s, m, nil)
		all = append(all, s)
	}
	counts["oneway"] = nOneway
	// This client's SendOneWay does not set the RPC_ONEWAY flag bit, so the broker answers it like
	// any request; give those answers time to arrive before the connection is closed.
	time.Sleep(time.Second)
	withTimeout("producer shutdown", 30*time.Second, p.Shutdown)

	expected := map[string]bool{}
	for _, s := range all {
		expected[label(s.Kind, s.UserProps["idx"])] = true
	}
	c, err := rocketmq.NewPushConsumer(
		consumer.WithNsResolver(resolver),
		consumer.WithGroupName("CG_push_"+topic),
		consumer.WithInstance(fmt.Sprintf("go-push-%d", pid)),
		consumer.WithConsumerModel(consumer.Clustering),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
		consumer.WithVIPChannel(false),
	)
	if err != nil {
		die("new push consumer: %v", err)
	}
	err = c.Subscribe(topic, consumer.MessageSelector{}, func(_ context.Context,
		msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			q := 0
			if m.Queue != nil {
				q = m.Queue.QueueId
			}
			received = append(received, recv{
				MsgID: m.MsgId, OffsetMsgID: m.OffsetMsgId, Topic: m.Topic, QueueID: q,
				QueueOffset: m.QueueOffset, Tags: m.GetTags(), Keys: m.GetKeys(),
				BodyLen: len(m.Body), BodySHA256: digest(m.Body), ReconsumeTimes: m.ReconsumeTimes,
				Kind: m.GetProperty("kind"), Idx: m.GetProperty("idx"),
			})
		}
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		die("subscribe: %v", err)
	}
	if err := c.Start(); err != nil {
		die("push consumer start: %v", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := have()
		missing := 0
		for k := range expected {
			if !got[k] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			die("push consumer missed %d of %d messages", missing, len(expected))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// let in-flight pulls settle so what was pulled is also what the listener saw
	for last := -1; ; {
		mu.Lock()
		now := len(received)
		mu.Unlock()
		if now == last {
			break
		}
		last = now
		time.Sleep(1500 * time.Millisecond)
	}
	withTimeout("push consumer shutdown", 30*time.Second, c.Shutdown)

	sort.SliceStable(all, func(i, j int) bool { // sync, async, oneway; by idx within each
		order := map[string]int{"sync": 0, "async": 1, "oneway": 2}
		a, b := all[i], all[j]
		if a.Kind != b.Kind {
			return order[a.Kind] < order[b.Kind]
		}
		ai, _ := strconv.Atoi(a.UserProps["idx"])
		bi, _ := strconv.Atoi(b.UserProps["idx"])
		return ai < bi
	})
	mu.Lock()
	t := truth{
		ScenarioMode: "produce-consume", Client: "go rocketmq-client-go " + clientVersion(),
		ClientLanguage: "GO", ClientVersion: 317, SendCode: 10, OnewayFlag: false,
		Protocol: "remoting", SerializeType: "JSON", Namesrv: ns, Topic: topic,
		Counts: counts, Sent: all, Received: map[string][]recv{"push": received},
		ElapsedMs: time.Since(t0).Milliseconds(),
	}
	data, err := json.MarshalIndent(t, "", "  ")
	mu.Unlock()
	if err != nil {
		die("json: %v", err)
	}
	if err := os.WriteFile(out, append(data, '\n'), 0o644); err != nil {
		die("write %s: %v", out, err)
	}
	fmt.Printf("OK sent=%d received=%d counts=%v\n", len(all), len(received), counts)
	os.Exit(0)
}
