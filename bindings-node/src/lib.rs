//! Node.js binding of Ferrocable (napi-rs).
//!
//! It only converts types and errors and hands off to the `ferrocable` core: options go to
//! `Config::set`, handler functions become a core `Handler`, broadcasts and remote disconnects go straight
//! to the running `Server`. The JavaScript API (`Server`, `Application`, `Channel`) lives in the npm
//! package's `index.js` on top of `NativeServer`; nothing here knows about channels or frames.

mod convert;
mod handler;
mod server;
