package wire

import "time"

// Message is a user message of the block storage API (from
// microversion 3.3): a background operation that failed.
type Message struct {
	ID              string    `json:"id"`
	RequestID       string    `json:"request_id"`
	EventID         string    `json:"event_id"`
	UserMessage     string    `json:"user_message"`
	MessageLevel    string    `json:"message_level"`
	ResourceType    string    `json:"resource_type"`
	ResourceUUID    string    `json:"resource_uuid"`
	CreatedAt       time.Time `json:"created_at"`
	GuaranteedUntil time.Time `json:"guaranteed_until"`
	Links           []Link    `json:"links"`
}

// MessageList answers GET /messages.
type MessageList struct {
	Messages []Message `json:"messages"`
	// MessagesLinks is the next page's link, when the page was full.
	MessagesLinks []Link `json:"messages_links,omitempty"`
}

// MessageShow answers GET /messages/{id}.
type MessageShow struct {
	Message Message `json:"message"`
}

// ClusterList answers GET /clusters and /clusters/detail (from 3.7):
// cairn's one volume service is in no cluster, so the list is empty.
type ClusterList struct {
	Clusters []struct{} `json:"clusters"`
}

// ManageableList answers GET /manageable_volumes and
// /manageable_snapshots (from 3.8) under Member, "manageable-volumes"
// or "manageable-snapshots": always empty, as every volume and snapshot
// of cairn's backend is cairn's already.
type ManageableList map[string][]struct{}
