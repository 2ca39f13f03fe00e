import type { Attachment } from "./chat-request";
import type { Stat } from "./stats";

/** An attachment with a local preview URL (`URL.createObjectURL`) for its thumbnail. */
export interface ShownAttachment extends Attachment {
  previewUrl: string;
}

/** Creates an element with a class and text, the only way this page builds DOM (no innerHTML). */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className = "", text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className !== "") node.className = className;
  if (text !== "") node.textContent = text;
  return node;
}

/** A thumbnail for an image or a video; videos show their first frame and a "video" badge. */
export function thumbnail(attachment: ShownAttachment): HTMLElement {
  const figure = el("figure", `thumb thumb-${attachment.kind}`);
  if (attachment.kind === "image") {
    const img = el("img");
    img.src = attachment.previewUrl;
    img.alt = attachment.name;
    figure.append(img);
  } else {
    const video = el("video");
    // "#t=0.1" makes the browser fetch and paint an early frame as the thumbnail.
    video.src = `${attachment.previewUrl}#t=0.1`;
    video.muted = true;
    video.preload = "metadata";
    video.setAttribute("aria-label", attachment.name);
    figure.append(video, el("span", "badge", "video"));
  }
  const caption = el("figcaption", "", attachment.name);
  caption.title = attachment.name;
  figure.append(caption);
  return figure;
}

/** The DOM of one message in the conversation. */
export class MessageView {
  readonly root: HTMLElement;
  private readonly text: HTMLElement;
  private meta: HTMLElement | null = null;
  private error: HTMLElement | null = null;

  constructor(role: "user" | "assistant", text: string, attachments: readonly ShownAttachment[]) {
    this.root = el("article", `msg msg-${role}`);
    this.root.append(el("h2", "who", role === "user" ? "You" : "MiniCPM-V"));
    if (attachments.length > 0) {
      const list = el("ul", "thumbs");
      list.setAttribute("aria-label", "Attachments");
      for (const attachment of attachments) {
        const item = el("li");
        item.append(thumbnail(attachment));
        list.append(item);
      }
      this.root.append(list);
    }
    this.text = el("div", "text", text);
    this.root.append(this.text);
  }

  /** Appends streamed answer text. */
  append(text: string): void {
    this.text.append(text);
  }

  /** Marks the message as still streaming (screen readers wait until it is done). */
  setBusy(busy: boolean): void {
    this.root.setAttribute("aria-busy", String(busy));
    this.root.classList.toggle("streaming", busy);
  }

  /** Shows the per-answer figures and an optional note ("stopped", "length limit"). */
  setStats(stats: readonly Stat[], note: string | null): void {
    this.meta?.remove();
    this.meta = el("p", "meta");
    if (note !== null) this.meta.append(el("span", "note", note));
    for (const stat of stats) {
      const span = el("span", "stat", stat.text);
      span.dataset.stat = stat.key;
      this.meta.append(span);
    }
    this.root.append(this.meta);
  }

  /** Shows an API or network error inside the message. */
  setError(message: string): void {
    this.error?.remove();
    this.error = el("p", "error", message);
    this.error.setAttribute("role", "alert");
    this.root.append(this.error);
    this.root.classList.add("failed");
  }
}
