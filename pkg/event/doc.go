// Package event owns the validation of incoming clicks. Validate is the one
// gate every ClickEvent passes before the router forwards it: an event it
// accepts has non-empty ids within their size limits, a valid click time, an
// ip that parses and a country in canonical (upper-case) form, so aggregators
// and filters downstream never see a malformed click.
//
// On the ingest path clicks are read in place from their protobuf encoding
// (wire.go: SplitEvents, ParseEvent into Fields, Fields.Validate): the
// router validates and routes them and forwards the client's bytes, and
// the aggregator reads them again, with no message or string allocated per
// click. ParseEvent decodes what proto.Unmarshal decodes (checked by
// fuzzing against it); an event that does not decode is rejected by its
// index like any invalid one.
//
// The package also decodes ingest requests leniently (UnmarshalIngest for
// protobuf, UnmarshalIngestJSON for the REST body), for when the stock
// decoders refuse a whole batch because of one event (a string that is not
// UTF-8): each event that does not decode becomes an Undecodable placeholder
// at its index, which Validate rejects with the reason it carries, so the
// rest of the batch is counted. The placeholder carries its reason in an
// unknown field, number 536870911 (protowire.MaxValidNumber) of ClickEvent;
// it never leaves the router.
package event
