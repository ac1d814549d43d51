// Renders Ollama Modelfile TEMPLATEs as Ollama executes them: Go's text/template (missing keys are zero values) over
// the chat's messages, consecutive messages of one role joined by a blank line and the system messages' text also
// given as .System (Ollama's template.Execute and collate). Used by test/serving-template.test.ts.
//
//	stdin:  {"renders": [{"template": "...", "messages": [{"role": "...", "content": "..."}]}]}
//	stdout: ["rendered text", ...]
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

// Message has the fields of Ollama's api.Message that a chat template reads.
type Message struct {
	Role     string `json:"role"`
	Content  string `json:"content"`
	Thinking string `json:"thinking"`
}

type render struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		msg := msgs[i]
		if msg.Role == "system" {
			system = append(system, msg.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msg.Role {
			collated[len(collated)-1].Content += "\n\n" + msg.Content
		} else {
			collated = append(collated, &msg)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func main() {
	var req struct {
		Renders []render `json:"renders"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad request:", err)
		os.Exit(1)
	}
	out := []string{}
	for _, r := range req.Renders {
		tmpl, err := template.New("").Option("missingkey=zero").Parse(r.Template)
		if err != nil {
			fmt.Fprintln(os.Stderr, "template does not parse:", err)
			os.Exit(1)
		}
		system, messages := collate(r.Messages)
		var b strings.Builder
		if err := tmpl.Execute(&b, map[string]any{"System": system, "Messages": messages, "Tools": nil, "Response": "", "Think": false}); err != nil {
			fmt.Fprintln(os.Stderr, "template does not execute:", err)
			os.Exit(1)
		}
		out = append(out, b.String())
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
