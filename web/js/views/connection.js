// The connection state, always visible while it is not "online", and always cleared after.

import { h, replace } from "./dom.js";

const LABEL = { connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" };

export class ConnectionBanner {
  constructor(store, actions) {
    this.store = store;
    this.el = h("div.connection", { role: "status", "aria-live": "polite", hidden: true });
    this.retry = h("button.link", { type: "button", onclick: () => actions.reconnectNow() }, "Retry now");
    store.on("conn", () => this.render());
    store.on("session", () => this.render());
  }

  render() {
    const { state, detail } = this.store.conn;
    this.el.dataset.state = state;
    this.el.hidden = state === "online" || !this.store.me;
    replace(this.el, h("span.dot", { class: state }), detail && state === "reconnecting" ? `Connection lost, ${detail}` : LABEL[state] || state,
      state === "reconnecting" ? this.retry : null);
  }
}
