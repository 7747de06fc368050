//! The Cognito attributes of a confirmed user, turned into the row we store.
//!
//! This is the one mapping from Cognito to `public.users`; everything that records a user goes
//! through [`NewUser::from_attributes`].

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

/// Cognito allows attribute values of up to 2048 characters.
pub const MAX_ATTRIBUTE_CHARS: usize = 2048;

/// A user ready to be inserted. Only `sub` is ever shown in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// `cognito_user_id` ← the `sub` attribute.
    pub sub: String,
    /// `email` ← the `email` attribute.
    pub email: String,
    /// `handle` ← `preferred_username`, else the event's `userName`.
    pub handle: String,
    /// `display_name` ← `name`, else the handle.
    pub display_name: String,
    /// `created_at`, when it is not the time of the INSERT: a parked user's is the time they were
    /// parked, which is when they confirmed. `None`: the column's default, `current_timestamp`.
    pub created_at: Option<SystemTime>,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("sub", &self.sub)
            .finish_non_exhaustive()
    }
}

/// Why attributes cannot become a user. Messages name attributes, never their values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidUser {
    #[error("the `{0}` attribute is missing or empty")]
    Missing(&'static str),
    #[error("the `{0}` attribute is longer than {MAX_ATTRIBUTE_CHARS} characters")]
    TooLong(&'static str),
    /// A NUL, which PostgreSQL's `text` cannot store, or an escaped lone surrogate, which the
    /// event is read with as a NUL ([`crate::event::read`]).
    #[error("the `{0}` attribute contains a NUL character or a lone surrogate")]
    ContainsNul(&'static str),
}

impl NewUser {
    /// Maps Cognito's `userName` and user attributes to the row.
    pub fn from_attributes(
        user_name: Option<&str>,
        attributes: &HashMap<String, String>,
    ) -> Result<Self, InvalidUser> {
        let attribute = |key: &'static str| -> Result<Option<&str>, InvalidUser> {
            optional(key, attributes.get(key).map(String::as_str))
        };
        let sub = attribute("sub")?.ok_or(InvalidUser::Missing("sub"))?;
        let email = attribute("email")?.ok_or(InvalidUser::Missing("email"))?;
        let handle = match attribute("preferred_username")? {
            Some(handle) => handle,
            None => optional("userName", user_name)?.ok_or(InvalidUser::Missing("userName"))?,
        };
        let display_name = attribute("name")?.unwrap_or(handle);
        Ok(Self {
            sub: sub.to_owned(),
            email: email.to_owned(),
            handle: handle.to_owned(),
            display_name: display_name.to_owned(),
            created_at: None,
        })
    }
}

impl NewUser {
    /// A user from the row's four values (a parked message), checked as attributes are. Errors
    /// name the column.
    pub fn checked(
        sub: &str,
        email: &str,
        handle: &str,
        display_name: &str,
    ) -> Result<Self, InvalidUser> {
        let required = |column: &'static str, value: &str| -> Result<String, InvalidUser> {
            optional(column, Some(value))?
                .map(str::to_owned)
                .ok_or(InvalidUser::Missing(column))
        };
        Ok(Self {
            sub: required("sub", sub)?,
            email: required("email", email)?,
            handle: required("handle", handle)?,
            display_name: required("display_name", display_name)?,
            created_at: None,
        })
    }
}

/// An attribute value: `None` when absent or blank, an error when it cannot be stored.
fn optional<'a>(key: &'static str, value: Option<&'a str>) -> Result<Option<&'a str>, InvalidUser> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_ATTRIBUTE_CHARS {
        return Err(InvalidUser::TooLong(key));
    }
    if value.contains('\0') {
        return Err(InvalidUser::ContainsNul(key));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn maps_every_column_from_its_attribute() {
        let user = NewUser::from_attributes(
            Some("cognito-user-name"),
            &attrs(&[
                ("sub", "1111-2222"),
                ("email", "ada@example.com"),
                ("preferred_username", "ada"),
                ("name", "Ada Lovelace"),
            ]),
        )
        .unwrap();
        assert_eq!(user.sub, "1111-2222");
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(user.handle, "ada");
        assert_eq!(user.display_name, "Ada Lovelace");
    }

    #[test]
    fn handle_falls_back_to_user_name_and_display_name_to_handle() {
        let user = NewUser::from_attributes(
            Some("grace"),
            &attrs(&[("sub", "s"), ("email", "g@example.com"), ("name", " ")]),
        )
        .unwrap();
        assert_eq!(user.handle, "grace");
        assert_eq!(user.display_name, "grace");
    }

    #[test]
    fn missing_or_blank_required_attributes_are_named() {
        let cases = [
            (attrs(&[("email", "e@x")]), "sub"),
            (attrs(&[("sub", ""), ("email", "e@x")]), "sub"),
            (attrs(&[("sub", "s")]), "email"),
            (attrs(&[("sub", "s"), ("email", "  ")]), "email"),
        ];
        for (attributes, name) in cases {
            let error = NewUser::from_attributes(Some("u"), &attributes).unwrap_err();
            assert_eq!(error, InvalidUser::Missing(name));
        }
        let error =
            NewUser::from_attributes(None, &attrs(&[("sub", "s"), ("email", "e@x")])).unwrap_err();
        assert_eq!(error, InvalidUser::Missing("userName"));
    }

    #[test]
    fn values_up_to_cognitos_limit_are_kept_and_longer_ones_refused() {
        let longest = "é".repeat(MAX_ATTRIBUTE_CHARS);
        let user = NewUser::from_attributes(
            Some("u"),
            &attrs(&[("sub", "s"), ("email", "e@x"), ("name", &longest)]),
        )
        .unwrap();
        assert_eq!(user.display_name, longest);
        let too_long = "a".repeat(MAX_ATTRIBUTE_CHARS + 1);
        let error =
            NewUser::from_attributes(Some("u"), &attrs(&[("sub", "s"), ("email", &too_long)]))
                .unwrap_err();
        assert_eq!(error, InvalidUser::TooLong("email"));
    }

    #[test]
    fn nul_characters_are_refused_because_postgres_text_cannot_hold_them() {
        let error = NewUser::from_attributes(
            Some("u"),
            &attrs(&[("sub", "s"), ("email", "e@x"), ("name", "a\0b")]),
        )
        .unwrap_err();
        assert_eq!(error, InvalidUser::ContainsNul("name"));
    }

    #[test]
    fn debug_shows_the_sub_only() {
        let user = NewUser::from_attributes(
            Some("u"),
            &attrs(&[
                ("sub", "the-sub"),
                ("email", "secret@example.com"),
                ("name", "Secret Name"),
            ]),
        )
        .unwrap();
        let debug = format!("{user:?}");
        assert!(debug.contains("the-sub"));
        assert!(!debug.contains("secret@example.com") && !debug.contains("Secret Name"));
    }
}
