/*
 * caas_auth: the CaaS OTA broker's own checks, as a mosquitto 2.0 plugin (API v5).
 *
 * Loaded once per listener (`per_listener_settings true`); each load gets its own
 * options, kept in the userdata of that instance (no global mutable state).
 *
 * 1. Shared subscriptions. A SUBSCRIBE or UNSUBSCRIBE of a `$share/...` filter is
 *    allowed only for the usernames listed in `plugin_opt_share_users` (commas or
 *    spaces between names; absent = nobody). Anyone else gets "Not authorized"
 *    (MQTT 5 SUBACK reason 0x87). Why: share groups are global across listeners, and
 *    a client that joins the gateway's group receives its share of every vehicle's
 *    messages; the broker checks read access only at delivery and then drops the
 *    message, so it is lost for the gateway too.
 *    Why not the ACL file: mosquitto 2.0.11 allows every SUBSCRIBE whatever the ACL
 *    file says (security_default.c, "FIXME - implement ACL subscription strings").
 *    Plugin callbacks run before the ACL file's, and the first answer other than
 *    "defer" wins, so this refusal stands.
 *
 * 2. Client ids (`plugin_opt_clientid_prefix username`, the service listener). A
 *    CONNECT whose client id is neither `<username>` nor `<username>-<something>` is
 *    refused, so no identity can take over another identity's session by its id.
 *
 * Every other check is deferred: the listener's password file and ACL file decide.
 * Each refusal is logged once, naming the username (never the password).
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define SHARE_PREFIX "$share"
#define LIST_SEPARATORS ", \t"

struct caas_auth {
	mosquitto_plugin_id_t *pid;
	char *share_users; /* separator-delimited usernames, or NULL for nobody */
	bool clientid_prefix;
};

/* True when `name` is one of the names of `list`. */
static bool listed(const char *list, const char *name)
{
	size_t len = strlen(name);

	while(list && *list){
		size_t token = strcspn(list, LIST_SEPARATORS);
		if(token == len && len > 0 && strncmp(list, name, len) == 0){
			return true;
		}
		list += token;
		list += strspn(list, LIST_SEPARATORS);
	}
	return false;
}

static const char *shown(const char *value)
{
	return value ? value : "(none)";
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct caas_auth *self = userdata;
	const char *username;

	(void)event;
	if(ed->access != MOSQ_ACL_SUBSCRIBE && ed->access != MOSQ_ACL_UNSUBSCRIBE){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(ed->topic == NULL || strncmp(ed->topic, SHARE_PREFIX, strlen(SHARE_PREFIX)) != 0){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	username = mosquitto_client_username(ed->client);
	if(username != NULL && listed(self->share_users, username)){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"caas_auth: refused %s of shared subscription %.200s to user %.100s (client %.100s)",
			ed->access == MOSQ_ACL_SUBSCRIBE ? "subscribe" : "unsubscribe",
			ed->topic, shown(username), shown(mosquitto_client_id(ed->client)));
	return MOSQ_ERR_ACL_DENIED;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct caas_auth *self = userdata;
	const char *client_id = mosquitto_client_id(ed->client);
	size_t len;

	(void)event;
	if(!self->clientid_prefix){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(ed->username != NULL && ed->username[0] != '\0' && client_id != NULL){
		len = strlen(ed->username);
		if(strncmp(client_id, ed->username, len) == 0
				&& (client_id[len] == '\0' || (client_id[len] == '-' && client_id[len + 1] != '\0'))){
			return MOSQ_ERR_PLUGIN_DEFER; /* the password file decides */
		}
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"caas_auth: refused connect of user %.100s: client id %.100s is not <username>[-<suffix>]",
			shown(ed->username), shown(client_id));
	return MOSQ_ERR_AUTH;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	(void)supported_version_count;
	(void)supported_versions;
	return 5;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	struct caas_auth *self;
	int i;

	self = mosquitto_calloc(1, sizeof(*self));
	if(self == NULL){
		return MOSQ_ERR_NOMEM;
	}
	self->pid = identifier;
	*userdata = self;
	for(i = 0; i < option_count; i++){
		if(strcmp(options[i].key, "share_users") == 0){
			mosquitto_free(self->share_users);
			self->share_users = mosquitto_strdup(options[i].value);
			if(self->share_users == NULL){
				return MOSQ_ERR_NOMEM;
			}
		}else if(strcmp(options[i].key, "clientid_prefix") == 0){
			if(strcmp(options[i].value, "username") != 0){
				mosquitto_log_printf(MOSQ_LOG_ERR,
						"caas_auth: plugin_opt_clientid_prefix must be \"username\", got \"%s\"",
						options[i].value);
				return MOSQ_ERR_INVAL;
			}
			self->clientid_prefix = true;
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "caas_auth: unknown option plugin_opt_%s", options[i].key);
			return MOSQ_ERR_INVAL;
		}
	}
	if(mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, self)
			|| mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, self)){
		return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct caas_auth *self = userdata;

	(void)options;
	(void)option_count;
	if(self == NULL){
		return MOSQ_ERR_SUCCESS;
	}
	mosquitto_callback_unregister(self->pid, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(self->pid, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_free(self->share_users);
	mosquitto_free(self);
	return MOSQ_ERR_SUCCESS;
}
