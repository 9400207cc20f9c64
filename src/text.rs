//! Messages cut to fit where they are kept (status, Events, history).

/// The longest message kept from a container or the API server: status must stay small,
/// and an Event's note is limited to 1 kB.
pub const MAX_MESSAGE: usize = 900;

/// Cuts a message to [`MAX_MESSAGE`] bytes on character boundaries, keeping its start (which
/// names what it is about: the loop, the field the API server refused) and most of its end (a
/// log tail's last lines say the most).
pub fn clip(message: &str) -> String {
    clip_to(message, MAX_MESSAGE)
}

/// Cuts a message to at most `max` bytes (at least 16) on character boundaries: its first
/// quarter, ` ... `, and the rest from its end.
pub fn clip_to(message: &str, max: usize) -> String {
    const GAP: &str = " ... ";
    if message.len() <= max {
        return message.to_string();
    }
    let budget = max.max(16) - GAP.len();
    let mut head = budget / 4;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - (budget - budget / 4);
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{GAP}{}", &message[..head], &message[tail..])
}
