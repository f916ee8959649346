// Package event owns the validation of incoming clicks. Validate is the one
// gate every ClickEvent passes before the router forwards it: an event it
// accepts has non-empty ids within their size limits, a valid click time, an
// ip that parses and a country in canonical (upper-case) form, so aggregators
// and filters downstream never see a malformed click.
package event
