// @generated automatically by Diesel CLI.

diesel::table! {
    api_keys (id) {
        id -> Text,
        pool -> Text,
        secret -> Text,
        prefix -> Text,
        label -> Nullable<Text>,
        category -> Nullable<Text>,
        state -> Text,
        failures -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        disabled_reason -> Nullable<Text>,
        disabled_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    request_logs (request_id) {
        request_id -> Text,
        time -> Timestamp,
        user_name -> Text,
        client_ip -> Nullable<Text>,
        dialect -> Text,
        model_requested -> Text,
        model_served -> Nullable<Text>,
        backend -> Nullable<Text>,
        key_id -> Nullable<Text>,
        status -> Integer,
        tokens_in -> BigInt,
        tokens_out -> BigInt,
        tokens_estimated -> Bool,
        ttfb_ms -> Nullable<BigInt>,
        duration_ms -> BigInt,
        error -> Nullable<Text>,
        category -> Nullable<Text>,
        body -> Nullable<Binary>,
        shared -> Bool,
        client_request_id -> Nullable<Text>,
    }
}

diesel::table! {
    usage_minute (minute, model, user_name, backend, key_id) {
        minute -> Timestamp,
        model -> Text,
        user_name -> Text,
        backend -> Text,
        key_id -> Text,
        requests -> BigInt,
        errors -> BigInt,
        tokens_in -> BigInt,
        tokens_out -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> Integer,
        name -> Text,
        token_hash -> Text,
        admin -> Bool,
        active -> Bool,
        rpm -> Nullable<Integer>,
        tpm -> Nullable<Integer>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    key_states (id) {
        id -> Text,
        pool -> Text,
        disabled_reason -> Text,
        disabled_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    api_keys,
    key_states,
    request_logs,
    usage_minute,
    users,
);
