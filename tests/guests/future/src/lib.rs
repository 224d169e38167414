//! An upcaster that targets `eshost:plugin@0.3.0`, a contract version the host does not
//! support: loading it must fail with a message naming both versions.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: r#"
        package eshost:plugin@0.3.0;

        interface upcaster {
            upcast: func(event-type: string, data: string) -> result<string, string>;
        }

        world future-upcaster {
            export upcaster;
        }
    "#,
});

struct Future;

impl exports::eshost::plugin::upcaster::Guest for Future {
    fn upcast(_event_type: String, data: String) -> Result<String, String> {
        Ok(data)
    }
}

export!(Future);
