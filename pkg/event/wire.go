package event

import (
	"fmt"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// Clicks travel from the client to the aggregator in their protobuf
// encoding: the router reads each ClickEvent of an IngestRequest in place
// (ParseEvent), validates it (Fields.Validate), and forwards its bytes
// unchanged; the aggregator reads them in place again. No message or
// string is allocated per click on that path; decoding and re-encoding
// every click as Go messages was about a third of a full-speed profile.

// Fields is one ClickEvent read in place from its protobuf encoding, with
// the semantics of proto.Unmarshal (the last occurrence of a string field
// wins, occurrences of click_time merge, unknown fields are skipped). Its
// strings alias the encoding: they are valid only as long as the bytes are,
// and must be copied to be kept.
type Fields struct {
	ClickID, AdID, UserID, IP, Country string
	Seconds                            int64 // click_time
	Nanos                              int32
	HasTime                            bool // click_time is present
	undecodable                        string
	utf8Checked                        bool // the strings are known to be UTF-8 (ParseEvent checked them)
}

// Field numbers of ClickEvent and of google.protobuf.Timestamp.
const (
	fieldClickID   protowire.Number = 1
	fieldAdID      protowire.Number = 2
	fieldClickTime protowire.Number = 3
	fieldUserID    protowire.Number = 4
	fieldIP        protowire.Number = 5
	fieldCountry   protowire.Number = 6
	fieldSeconds   protowire.Number = 1
	fieldNanos     protowire.Number = 2
)

// ParseEvent reads the encoded ClickEvent b into f. It returns "" when b
// decodes, else why not, as Validate words it ("ad_id is not valid UTF-8",
// "event could not be decoded: ..."). An event that carries an Undecodable
// placeholder's reason decodes, and Validate rejects it with that reason.
func ParseEvent(b []byte, f *Fields) string {
	*f = Fields{utf8Checked: true}
	for len(b) > 0 {
		var num protowire.Number
		var typ protowire.Type
		if c := b[0]; c < 0x80 && c >= 8 { // a one-byte tag, the usual case
			num, typ = protowire.Number(c>>3), protowire.Type(c&7)
			b = b[1:]
		} else {
			var n int
			if num, typ, n = consumeTag(b); n < 0 {
				return decodeReason(n)
			}
			b = b[n:]
		}
		if typ != protowire.BytesType || !isEventBytesField(num) {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return decodeReason(m)
			}
			b = b[m:]
			continue
		}
		var v []byte
		if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) { // a one-byte length
			v, b = b[1:1+b[0]], b[1+b[0]:]
		} else {
			var m int
			if v, m = protowire.ConsumeBytes(b); m < 0 {
				return decodeReason(m)
			}
			b = b[m:]
		}
		switch num {
		case fieldClickTime:
			if r := parseTimestamp(v, f); r != "" {
				return r
			}
			f.HasTime = true
		case reasonField:
			if f.undecodable == "" {
				f.undecodable = sanitizeReason(v)
			}
		default:
			if !validUTF8(v) {
				return stringFields[num] + " is not valid UTF-8"
			}
			s := unsafe.String(unsafe.SliceData(v), len(v))
			switch num {
			case fieldClickID:
				f.ClickID = s
			case fieldAdID:
				f.AdID = s
			case fieldUserID:
				f.UserID = s
			case fieldIP:
				f.IP = s
			case fieldCountry:
				f.Country = s
			}
		}
	}
	return ""
}

// validUTF8 is utf8.Valid with a quicker path for short ASCII strings,
// which ids, addresses and countries almost always are.
func validUTF8(v []byte) bool {
	var or byte
	for _, c := range v {
		or |= c
	}
	return or < utf8.RuneSelf || utf8.Valid(v)
}

func isEventBytesField(num protowire.Number) bool {
	return (num >= fieldClickID && num <= fieldCountry) || num == reasonField
}

// parseTimestamp merges the encoded google.protobuf.Timestamp v into f.
func parseTimestamp(v []byte, f *Fields) string {
	for len(v) > 0 {
		num, typ, n := consumeTag(v)
		if n < 0 {
			return decodeReason(n)
		}
		v = v[n:]
		if typ == protowire.VarintType && (num == fieldSeconds || num == fieldNanos) {
			x, m := protowire.ConsumeVarint(v)
			if m < 0 {
				return decodeReason(m)
			}
			v = v[m:]
			if num == fieldSeconds {
				f.Seconds = int64(x)
			} else {
				f.Nanos = int32(x)
			}
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, v)
		if m < 0 {
			return decodeReason(m)
		}
		v = v[m:]
	}
	return ""
}

// consumeTag is protowire.ConsumeTag refusing, as proto.Unmarshal does,
// field numbers above the largest valid one.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -2 // protowire.ParseError(-2): invalid field number
	}
	return num, typ, n
}

func decodeReason(n int) string {
	return "event could not be decoded: " + protowire.ParseError(n).Error()
}

// SplitEvents appends to dst the encoding of every event (field 1) of an
// encoded IngestRequest or ForwardRequest, in order; other fields are
// skipped, as proto.Unmarshal keeps them as unknown fields. It fails only
// when the framing of the request itself is broken. The slices alias b.
func SplitEvents(b []byte, dst [][]byte) ([][]byte, error) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return dst, fmt.Errorf("request: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return dst, fmt.Errorf("request event %d: %w", len(dst), protowire.ParseError(m))
			}
			dst = append(dst, v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return dst, fmt.Errorf("request field %d: %w", num, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return dst, nil
}

// AppendEvent appends the encoded event ev as field 1 of a request
// (IngestRequest and ForwardRequest both hold their events there).
func AppendEvent(dst, ev []byte) []byte {
	dst = protowire.AppendTag(dst, 1, protowire.BytesType)
	return protowire.AppendBytes(dst, ev)
}
