package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	adclickv1 "github.com/adclick/adclick/gen/adclick/v1"
)

// An event of a batch that cannot be decoded on its own (a string field that
// is not UTF-8, which proto3 and protojson refuse, or a malformed field) must
// be rejected by its index, like any invalid event, while the rest of the
// batch is counted. The lenient decoders below put in its place an
// undecodable placeholder: an empty ClickEvent whose unknown fields hold one
// field, number reasonField, carrying the reason. Validate rejects it with
// that reason, so the ingest path needs no change and Validate stays the one
// gate. The placeholder exists only inside the router's process (rejected
// events are never forwarded); a client that sends field reasonField itself
// only gets its own event rejected with its own (sanitized) text.
const reasonField protowire.Number = protowire.MaxValidNumber

// maxReasonBytes bounds a carried reason (a forged one included).
const maxReasonBytes = 256

// Undecodable returns the placeholder of an event that could not be decoded;
// Validate rejects it with reason.
func Undecodable(reason string) *adclickv1.ClickEvent {
	ev := &adclickv1.ClickEvent{}
	b := protowire.AppendTag(nil, reasonField, protowire.BytesType)
	b = protowire.AppendString(b, reason)
	ev.ProtoReflect().SetUnknown(b)
	return ev
}

// undecodableReason returns the reason an Undecodable placeholder carries,
// from the unknown fields of an event, or "" when there is none.
func undecodableReason(unknown []byte) string {
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeTag(unknown)
		if n < 0 {
			return ""
		}
		unknown = unknown[n:]
		if num == reasonField && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(unknown)
			if m < 0 {
				return ""
			}
			return sanitizeReason(v)
		}
		m := protowire.ConsumeFieldValue(num, typ, unknown)
		if m < 0 {
			return ""
		}
		unknown = unknown[m:]
	}
	return ""
}

// sanitizeReason makes a carried reason safe to answer: valid UTF-8 (the
// response must marshal), bounded, never empty.
func sanitizeReason(v []byte) string {
	if len(v) > maxReasonBytes {
		v = v[:maxReasonBytes]
	}
	s := strings.ToValidUTF8(string(v), "\uFFFD")
	if s == "" {
		return "event could not be decoded"
	}
	return s
}

// String fields of ClickEvent by protobuf field number, named as in the
// reasons Validate gives.
var stringFields = map[protowire.Number]string{1: "click_id", 2: "ad_id", 4: "user_id", 5: "ip", 6: "country"}

// UnmarshalIngest decodes a protobuf IngestRequest event by event. It is the
// fallback of the router's codec when proto.Unmarshal refused the whole
// request: an event that does not decode becomes an Undecodable placeholder
// at its index, naming the first string field that is not valid UTF-8 (or
// the decoding error). It fails only when the request itself is malformed
// (its framing, not an event's content). req is reset first.
func UnmarshalIngest(b []byte, req *adclickv1.IngestRequest) error {
	proto.Reset(req)
	var unknown []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("ingest request: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return fmt.Errorf("ingest request field %d: %w", num, protowire.ParseError(m))
		}
		if num != 1 || typ != protowire.BytesType {
			// Not an event: kept as an unknown field, as proto.Unmarshal
			// does (which writes the tag in its shortest form).
			unknown = protowire.AppendTag(unknown, num, typ)
			unknown = append(unknown, b[n:n+m]...)
			b = b[n+m:]
			continue
		}
		v, _ := protowire.ConsumeBytes(b[n:])
		b = b[n+m:]
		ev := &adclickv1.ClickEvent{}
		if err := proto.Unmarshal(v, ev); err != nil {
			ev = Undecodable(protoEventReason(v, err))
		}
		req.Events = append(req.Events, ev)
	}
	if len(unknown) > 0 {
		req.ProtoReflect().SetUnknown(unknown)
	}
	return nil
}

// protoEventReason tells why the encoded event v did not decode: the first
// string field that is not UTF-8, or err.
func protoEventReason(v []byte, err error) string {
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			break
		}
		m := protowire.ConsumeFieldValue(num, typ, v[n:])
		if m < 0 {
			break
		}
		if name, ok := stringFields[num]; ok && typ == protowire.BytesType {
			if s, _ := protowire.ConsumeBytes(v[n:]); !utf8.Valid(s) {
				return name + " is not valid UTF-8"
			}
		}
		v = v[n+m:]
	}
	return "event could not be decoded: " + err.Error()
}

// jsonFields maps the JSON keys protojson accepts for ClickEvent (the
// lowerCamelCase JSON name and the proto name) to the name used in reasons.
var jsonFields = map[string]string{
	"clickId": "click_id", "click_id": "click_id",
	"adId": "ad_id", "ad_id": "ad_id",
	"clickTime": "click_time", "click_time": "click_time",
	"userId": "user_id", "user_id": "user_id",
	"ip": "ip", "country": "country",
}

// UnmarshalIngestJSON decodes a JSON IngestRequest event by event with opts.
// It is the fallback of the REST gateway when protojson refused the whole
// body: an event that does not decode (a string that is not UTF-8 or holds a
// lone surrogate escape, a malformed click_time, a value of the wrong type)
// becomes an Undecodable placeholder at its index, naming the field. It
// fails, as protojson does, when the body is not a JSON object with at most
// one "events" member, an array whose elements are objects. req is reset
// first.
func UnmarshalIngestJSON(b []byte, req *adclickv1.IngestRequest, opts protojson.UnmarshalOptions) error {
	proto.Reset(req)
	top, err := jsonMembers(b)
	if err != nil {
		return fmt.Errorf("ingest request: %w", err)
	}
	var raw json.RawMessage
	for _, m := range top {
		switch {
		case m.key == "events" && raw != nil:
			return errors.New(`ingest request: duplicate field "events"`)
		case m.key == "events":
			raw = m.value
		case !opts.DiscardUnknown:
			return fmt.Errorf("ingest request: unknown field %q", m.key)
		}
	}
	if raw == nil || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var events []json.RawMessage
	if err := json.Unmarshal(raw, &events); err != nil {
		return fmt.Errorf("ingest request: events: %w", err)
	}
	for i, e := range events {
		ev := &adclickv1.ClickEvent{}
		if err := opts.Unmarshal(e, ev); err != nil {
			reason, ok := jsonEventReason(e, opts)
			if !ok {
				return fmt.Errorf("ingest request: event %d: %w", i, err)
			}
			ev = Undecodable(reason)
		}
		req.Events = append(req.Events, ev)
	}
	return nil
}

// jsonEventReason tells why the JSON event e did not decode, field by field.
// It reports false when e is not a JSON object, which leaves the whole body
// refused, as protojson does.
func jsonEventReason(e json.RawMessage, opts protojson.UnmarshalOptions) (string, bool) {
	fields, err := jsonMembers(e)
	if err != nil {
		return "", false
	}
	seen := make(map[string]bool, len(fields))
	for _, f := range fields {
		name, known := jsonFields[f.key]
		if !known {
			if opts.DiscardUnknown {
				continue
			}
			return fmt.Sprintf("unknown field %q", f.key), true
		}
		if seen[name] {
			return name + " is set twice", true
		}
		seen[name] = true
		if !utf8.Valid(f.value) {
			return name + " is not valid UTF-8", true
		}
		one, err := json.Marshal(map[string]json.RawMessage{f.key: f.value})
		if err != nil {
			return name + " is not valid JSON", true
		}
		if err := opts.Unmarshal(one, &adclickv1.ClickEvent{}); err != nil {
			if name != "click_time" && len(f.value) > 0 && f.value[0] == '"' {
				// A JSON string a proto string refuses: an escape that is
				// no Unicode character (a lone surrogate).
				return name + " is not valid UTF-8", true
			}
			return name + " could not be decoded: " + trimProtoErr(err), true
		}
	}
	return "event could not be decoded", true
}

// member is one "key": value of a JSON object, in document order.
type member struct {
	key   string
	value json.RawMessage
}

// jsonMembers splits a JSON object into its members, duplicates kept.
func jsonMembers(b []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("object key is not a string")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		out = append(out, member{key: strings.ToValidUTF8(key, "\uFFFD"), value: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return out, nil
}

// trimProtoErr drops protojson's "proto: (line 1:15): " preamble, whose
// position is in the one-field document built to find the field, not in the
// request.
func trimProtoErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "): "); i >= 0 && strings.HasPrefix(s, "proto:") {
		s = s[i+3:]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
