-- wrk script: PUT COR detaches at the stand-in, to measure the stand-in's own ceiling.
-- wrk ... -s cor_detach.lua URL/v2/integrations/users/USER/detach -- TOKEN
function init(args)
  wrk.method = "PUT"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.body = '{"workspaces":["WS-ENG"],"metadata":{"source":"OKTA"}}'
end
