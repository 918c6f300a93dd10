package vcenter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"

	"github.com/vmware-samples/vmware-event-router/gateway"
)

// An answer of vCenter's with one event that does not decode (invalid
// UTF-8 or an XML-illegal character in a message or a VM name, a number out
// of range) fails the SDK's decoding of the whole answer; asking again gets
// the same answer, so the stream would stall on it for ever. The stream
// therefore keeps the raw body of its waits and reads (capture) and, only
// when the SDK's decoder fails, decodes it again event by event (recover):
// every good event is handed on, and each bad one becomes a dead letter
// (badEvent) in its place in the history.

// maxRaw caps the raw XML a dead letter keeps of an undecodable event.
const maxRaw = 64 << 10

// capture holds the raw body of one SOAP answer.
type capture struct {
	body bytes.Buffer
	ok   bool // the whole body of a 200 answer was read
}

type captureKey struct{}

// withCapture makes the stream's transport keep the body of the call made
// with the returned context in c.
func withCapture(ctx context.Context, c *capture) context.Context {
	c.ok = false
	return context.WithValue(ctx, captureKey{}, c)
}

// decodeFailed reports whether err, returned by a call made with c, can
// only come from decoding: the whole answer arrived and was not a fault.
func (c *capture) decodeFailed(ctx context.Context, err error) bool {
	return err != nil && c.ok && ctx.Err() == nil && !soap.IsSoapFault(err)
}

// captureTransport reads the whole body of a call whose context carries a
// capture into it, and hands the SDK's decoder a reader over those bytes.
// The copy costs a few microseconds per answer; the decoding it makes
// possible is done only when the SDK's fails.
type captureTransport struct {
	next http.RoundTripper
}

func (t *captureTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c, _ := req.Context().Value(captureKey{}).(*capture)
	res, err := t.next.RoundTrip(req)
	if c == nil || err != nil {
		return res, err
	}
	c.body.Reset()
	_, err = c.body.ReadFrom(res.Body)
	if cerr := res.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			err = errors.Join(ctxErr, err)
		}
		return nil, err
	}
	c.ok = res.StatusCode == http.StatusOK
	res.Body = io.NopCloser(bytes.NewReader(c.body.Bytes()))
	res.ContentLength = int64(c.body.Len())
	return res, nil
}

// badEvent is an event whose XML does not decode. Its embedded Event holds
// the key and CreatedTime read from the raw XML, so it sorts and moves the
// cursor as the event would have; when they cannot be read (readable is
// false) it borrows its neighbour's, for its place in the order only.
type badEvent struct {
	types.Event

	pos      gateway.Position // the key and time read, when both could be
	readable bool
	raw      string
	err      error
}

func newBadEvent(elem []byte, err error) *badEvent {
	b := &badEvent{err: err}
	raw := elem
	if len(raw) > maxRaw {
		raw = raw[:maxRaw]
	}
	b.raw = string(raw)
	var keyOK, timeOK bool
	if v, ok := rawField(elem, "key"); ok {
		if k, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 32); err == nil {
			b.pos.Key, keyOK = int32(k), true
		}
	}
	if v, ok := rawField(elem, "createdTime"); ok {
		if t, err := time.Parse(time.RFC3339Nano, string(bytes.TrimSpace(v))); err == nil {
			b.pos.Time, timeOK = t, true
		}
	}
	b.readable = keyOK && timeOK
	if !b.readable {
		// Half a position would place the dead letter wrongly in the
		// watermark: none is given.
		b.pos = gateway.Position{}
	}
	b.Key, b.CreatedTime = b.pos.Key, b.pos.Time
	return b
}

// rawField returns the text of the first element named name in elem. The
// key and the creation time are the first and third fields of every event.
func rawField(elem []byte, name string) ([]byte, bool) {
	open, closing := "<"+name+">", "</"+name+">"
	i := bytes.Index(elem, []byte(open))
	if i < 0 {
		return nil, false
	}
	rest := elem[i+len(open):]
	j := bytes.Index(rest, []byte(closing))
	if j < 0 {
		return nil, false
	}
	return rest[:j], true
}

// elementRanges returns where the elements named name start and end in
// body. Events are the only elements of the stream's answers with these
// names ("returnval" in ReadNextEvents, "Event" in a latest page; an
// event's own fields are lowerCamel), and none nests in another, so a byte
// search finds them even where the XML is not well-formed.
func elementRanges(body []byte, name string) [][2]int {
	open, closing := []byte("<"+name), []byte("</"+name+">")
	var out [][2]int
	for i := 0; i < len(body); {
		j := bytes.Index(body[i:], open)
		if j < 0 {
			break
		}
		start := i + j
		k := start + len(open)
		if k >= len(body) {
			break
		}
		if c := body[k]; c != ' ' && c != '>' && c != '/' && c != '\t' && c != '\n' && c != '\r' {
			i = k // a longer name
			continue
		}
		gt := bytes.IndexByte(body[k:], '>')
		if gt < 0 {
			break
		}
		end := k + gt + 1
		if body[end-2] != '/' {
			e := bytes.Index(body[end:], closing)
			if e < 0 {
				break
			}
			end += e + len(closing)
		}
		out = append(out, [2]int{start, end})
		i = end
	}
	return out
}

// elemDoc is one event element on its own, as decodeElement wraps it.
type elemDoc struct {
	Returnval []eventElem `xml:"returnval"`
	Event     []eventElem `xml:"Event"`
}

// The namespaces vCenter declares on its envelope, which an element cut
// out of it needs.
const (
	elemOpen  = `<doc xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">`
	elemClose = `</doc>`
)

// decodeElement decodes one event element cut out of an answer.
func decodeElement(elem []byte, tf types.Func) (types.BaseEvent, error) {
	doc := make([]byte, 0, len(elemOpen)+len(elem)+len(elemClose))
	doc = append(append(append(doc, elemOpen...), elem...), elemClose...)
	d := xml.NewDecoder(bytes.NewReader(doc))
	d.TypeFunc = tf
	var v elemDoc
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	for _, e := range append(v.Returnval, v.Event...) {
		if e.ev != nil {
			return e.ev, nil
		}
	}
	return nil, errors.New("empty event element")
}

// recoverEvents decodes the event elements named name of body one by one:
// the good ones as events, the others as badEvents, in the answer's order.
// It returns nil when body holds no such element.
func recoverEvents(body []byte, name string, tf types.Func) (evs []types.BaseEvent, bad int) {
	for _, r := range elementRanges(body, name) {
		elem := body[r[0]:r[1]]
		ev, err := decodeElement(elem, tf)
		if err != nil {
			ev = newBadEvent(elem, err)
			bad++
		}
		evs = append(evs, ev)
	}
	// An unreadable event keeps its place in the answer: it takes the key
	// and time of the event before it (or else after it), and the stable
	// sort leaves it next to that one.
	for i, e := range evs {
		b, ok := e.(*badEvent)
		if !ok || b.readable {
			continue
		}
		if n := neighbour(evs, i); n != nil {
			b.Key, b.CreatedTime = n.Key, n.CreatedTime
		}
	}
	return evs, bad
}

// neighbour returns the nearest event before evs[i] whose position is
// known, else the nearest after it, else nil.
func neighbour(evs []types.BaseEvent, i int) *types.Event {
	known := func(e types.BaseEvent) bool {
		b, ok := e.(*badEvent)
		return !ok || b.readable
	}
	for j := i - 1; j >= 0; j-- {
		if known(evs[j]) {
			return evs[j].GetEvent()
		}
	}
	for j := i + 1; j < len(evs); j++ {
		if known(evs[j]) {
			return evs[j].GetEvent()
		}
	}
	return nil
}

// readNext is readNextEvents on f's reader, decoding the answer event by
// event when the SDK's decoder fails on it.
func (f *follower) readNext(ctx context.Context) ([]types.BaseEvent, error) {
	page, err := readNextEvents(withCapture(ctx, &f.capt), f.cn.c, &f.capt, f.reader, f.s.tun.readBatch)
	if !f.capt.decodeFailed(ctx, err) {
		return page, err
	}
	evs, bad := recoverEvents(f.capt.body.Bytes(), "returnval", f.cn.c.Types)
	if bad == 0 {
		return nil, err
	}
	f.log.Warn("vCenter's events did not decode; decoded them one by one", "undecodable", bad, "err", err)
	return evs, nil
}

// waitForUpdates is WaitForUpdatesEx. When the SDK's decoder fails on the
// answer because of undecodable events in the latest page, those events are
// cut out and the rest decoded, for the version; recovered then says the
// page must not be trusted (the history is read instead, where the bad
// events are dead-lettered in their place).
func (f *follower) waitForUpdates(ctx context.Context, req *types.WaitForUpdatesEx) (set *types.UpdateSet, recovered bool, err error) {
	var res methods.WaitForUpdatesExBody
	reqBody, err := f.waitReq.request(req)
	if err != nil {
		return nil, false, err
	}
	err = soapCall(withCapture(ctx, &f.capt), f.cn.c, &f.capt, reqBody, &methods.WaitForUpdatesExBody{Req: req}, &res,
		func(body []byte, tf types.Func) error {
			r := new(types.WaitForUpdatesExResponse)
			if err := decodeBody(body, tf, "WaitForUpdatesExResponse", r); err != nil {
				return err
			}
			res.Res = r
			return nil
		})
	if err == nil {
		if res.Res == nil {
			return nil, false, nil
		}
		return res.Res.Returnval, false, nil
	}
	if !f.capt.decodeFailed(ctx, err) {
		return nil, false, err
	}
	body := f.capt.body.Bytes()
	spliced := make([]byte, 0, len(body))
	last, cut := 0, 0
	for _, r := range elementRanges(body, "Event") {
		if _, derr := decodeElement(body[r[0]:r[1]], f.cn.c.Types); derr != nil {
			spliced = append(spliced, body[last:r[0]]...)
			last = r[1]
			cut++
		}
	}
	if cut == 0 {
		return nil, false, err
	}
	spliced = append(spliced, body[last:]...)
	var resBody methods.WaitForUpdatesExBody
	d := xml.NewDecoder(bytes.NewReader(spliced))
	d.TypeFunc = f.cn.c.Types
	if derr := d.Decode(&soap.Envelope{Body: &resBody}); derr != nil || resBody.Res == nil {
		return nil, false, err
	}
	f.log.Warn("the latest page holds events that do not decode; reading the history", "undecodable", cut, "err", err)
	return resBody.Res.Returnval, true, nil
}

// handBad hands an undecodable event on as a dead letter. One whose key
// and time were read moves the cursor like any event; one whose were not
// cannot be placed in the history, so it is recognised by its bytes not to
// be dead-lettered twice in a run.
func (f *follower) handBad(ctx context.Context, b *badEvent) error {
	var sum [32]byte
	if !b.readable {
		sum = sha256.Sum256([]byte(b.raw))
		if (*f.unreadable)[sum] {
			return nil
		}
	}
	u := gateway.Undecodable{Position: b.pos, Source: f.s.source, Raw: b.raw, Err: b.err}
	if err := f.h.Undecodable(ctx, u); err != nil {
		return err
	}
	f.handed++
	if !f.catchUp {
		f.s.deadLettered.Inc()
	}
	if b.readable {
		f.cur.advance(&b.Event)
		return nil
	}
	if *f.unreadable == nil || len(*f.unreadable) >= maxUnreadable {
		*f.unreadable = map[[32]byte]bool{}
	}
	(*f.unreadable)[sum] = true
	return nil
}

// maxUnreadable bounds the set of unreadable dead letters remembered.
const maxUnreadable = 1000
